"""`python -m samplecli`."""

from samplecli.cli import main

main()

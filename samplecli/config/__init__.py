"""Configuration: the settings schema, presets, SAMPLECLI_* variables and their resolution, and token references."""

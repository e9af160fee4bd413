"""Text statistics for comparing decoding strategies (Holtzman et al. 2019, Table 1), on token ids.

Every function is pure Python on lists of token ids, so each can be checked by hand on a tiny text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Tokens = Sequence[int]


def ngrams(tokens: Tokens, n: int) -> list[tuple[int, ...]]:
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def distinct_n(samples: Sequence[Tokens], n: int) -> float | None:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over the samples.
    None when there is no n-gram at all."""
    grams = [g for tokens in samples for g in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_fraction(tokens: Tokens, n: int = 4) -> float | None:
    """Share of the text's n-grams that already occurred earlier in it (0: no n-gram repeats)."""
    grams = ngrams(tokens, n)
    if not grams:
        return None
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def looped_fraction(tokens: Tokens, min_span: int = 8) -> float | None:
    """Share of the text's tokens that lie inside a loop anywhere in it: a stretch of at least `min_span`
    tokens that is one phrase written two or more times back to back (every copy counts, the first too).

    "ROMEO:\\nI'll tell thee.\\n\\nROMEO:\\nI'll tell thee." is a loop from its first token; "Romeo, Romeo,"
    (4 tokens) is too short to count. None for an empty text."""
    size = len(tokens)
    if not size:
        return None
    covered = [False] * size
    for period in range(1, size // 2 + 1):
        j = 0
        while j < size - period:
            if tokens[j] != tokens[j + period]:
                j += 1
                continue
            start = j
            while j < size - period and tokens[j] == tokens[j + period]:
                j += 1
            run = j - start  # tokens[start : j + period] repeats with this period
            if run >= period and run + period >= min_span:
                covered[start : j + period] = [True] * (j + period - start)
    return sum(covered) / size


def loop_at_end(tokens: Tokens, min_repeats: int = 3) -> tuple[int, int] | None:
    """The repeating loop a generation ends in, as (phrase length, repeats), or None.

    Following Holtzman et al. 2019 (section 6, "Repetition"): a generation counts as degenerate when it
    ends by repeating the same phrase over and over. Here that means its last `min_repeats * L` tokens
    are one phrase of L tokens written `min_repeats` or more times back to back, for some L >= 1; the
    shortest such phrase is reported, with how many times it repeats at the end.
    """
    size = len(tokens)
    for length in range(1, size // min_repeats + 1):
        phrase = list(tokens[size - length :])
        repeats = 1
        while size - (repeats + 1) * length >= 0 and list(
                tokens[size - (repeats + 1) * length : size - repeats * length]) == phrase:
            repeats += 1
        if repeats >= min_repeats:
            return length, repeats
    return None


def zipf_coefficient(samples: Sequence[Tokens]) -> float | None:
    """The exponent s of a Zipf law f(r) ~ r^-s fitted to the token frequencies pooled over the samples:
    minus the least-squares slope of log frequency against log rank (Holtzman et al. 2019, section 6, fit it
    on a large corpus of human English, where it is close to 1; on a few dozen tokens most tokens occur once
    and the fitted value is far from 1). None with fewer than two distinct tokens."""
    counts = sorted(Counter(t for tokens in samples for t in tokens).values(), reverse=True)
    if len(counts) < 2:
        return None
    xs = [math.log(rank) for rank in range(1, len(counts) + 1)]
    ys = [math.log(c) for c in counts]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return -sxy / sxx + 0.0  # + 0.0: equal counts give 0.0, not -0.0


def bleu(hypothesis: Tokens, references: Sequence[Tokens], max_n: int = 4) -> float:
    """Sentence BLEU-4 (Papineni et al. 2002) of one hypothesis against several references: clipped
    n-gram precisions, uniform weights, the brevity penalty with the closest reference length, and
    smoothing "method 1" of Chen & Cherry 2014 (a zero count becomes 0.1), as NLTK's sentence_bleu
    with SmoothingFunction().method1 computes it (the variant Texygen's Self-BLEU uses): no unigram in
    common is 0 before any smoothing, and an order longer than the hypothesis counts as 0 of 1 n-grams."""
    if not hypothesis or not references:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        hyp = Counter(ngrams(hypothesis, n))
        total = max(1, sum(hyp.values()))
        max_ref: Counter = Counter()
        for ref in references:
            for gram, count in Counter(ngrams(ref, n)).items():
                max_ref[gram] = max(max_ref[gram], count)
        clipped = sum(min(count, max_ref[gram]) for gram, count in hyp.items())
        if n == 1 and clipped == 0:
            return 0.0
        log_precision += math.log((clipped if clipped > 0 else 0.1) / total) / max_n
    hyp_len = len(hypothesis)
    ref_len = min((len(r) for r in references), key=lambda length: (abs(length - hyp_len), length))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def self_bleu(samples: Sequence[Tokens], max_n: int = 4) -> float | None:
    """Self-BLEU (Zhu et al. 2018): the mean BLEU (`bleu`) of each sample against all the others as references.
    High means the samples resemble each other (low diversity). None with fewer than two samples.

    Exact, in time linear in the tokens: an n-gram's clipping count against "all the others" is its largest count
    in any sample but the hypothesis, so keeping each n-gram's two largest counts (and which sample holds the
    largest) answers it for every hypothesis; the closest reference length likewise comes from the lengths'
    counts. Comparing every sample with every other, as the definition reads, took minutes at 10,000 samples."""
    if len(samples) < 2:
        return None
    samples = [list(s) for s in samples]
    log_precisions = [0.0] * len(samples)
    no_unigram = [False] * len(samples)
    for n in range(1, max_n + 1):
        counts = [Counter(ngrams(s, n)) for s in samples]
        best: dict[tuple[int, ...], tuple[int, int, int]] = {}  # gram: (largest count, its sample, second largest)
        for i, grams in enumerate(counts):
            for gram, count in grams.items():
                top, owner, second = best.get(gram, (0, -1, 0))
                best[gram] = (count, i, top) if count > top else (top, owner, max(second, count))
        for i, grams in enumerate(counts):
            clipped = 0
            for gram, count in grams.items():
                top, owner, second = best[gram]
                clipped += min(count, second if owner == i else top)
            if n == 1 and clipped == 0:
                no_unigram[i] = True
            log_precisions[i] += math.log((clipped if clipped > 0 else 0.1) / max(1, sum(grams.values()))) / max_n
    lengths = Counter(len(s) for s in samples)
    distinct = sorted(lengths)
    scores = []
    for i, sample in enumerate(samples):
        if not sample or no_unigram[i]:
            scores.append(0.0)
            continue
        scores.append(_brevity(len(sample), lengths, distinct) * math.exp(log_precisions[i]))
    return sum(scores) / len(scores)


def _brevity(hyp_len: int, lengths: Counter, distinct: list[int]) -> float:
    """`bleu`'s brevity penalty against the closest length (the shorter on a tie) among the other samples:
    `lengths` counts every sample's length, the hypothesis's own included once."""
    import bisect

    if lengths[hyp_len] > 1:
        ref_len = hyp_len
    else:
        at = bisect.bisect_left(distinct, hyp_len)
        near = [distinct[j] for j in (at - 1, at + 1 if at < len(distinct) and distinct[at] == hyp_len else at)
                if 0 <= j < len(distinct)]
        ref_len = min(near, key=lambda length: (abs(length - hyp_len), length))
    return 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))

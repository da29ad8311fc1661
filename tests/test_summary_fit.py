"""The extractive summary's cut: the newest lines that fit its token budget, found without
counting the whole text once per line dropped."""

import random

import pytest

from memory.background import summarization
from memory.background.summarization import newest_that_fit
from memory.text import count_text


def _one_at_a_time(lines: list[str], max_tokens: int) -> list[str]:
    """The cut as the summary made it before: drop the oldest line until the text fits."""
    lines = list(lines)
    while lines and count_text("\n".join(lines)) > max_tokens:
        lines.pop(0)
    return lines


def _lines(rng: random.Random, n: int) -> list[str]:
    words = ["Berlin", "ferret", "oat", "milk", "42", "café", "日本", "🙂", "—", "don't", "x" * 30]
    ends = [".", "!", "?!", "", " ", "...", ":"]  # punctuation a newline may join in one token
    return [
        f"- (7 December 2026) User{rng.randrange(3)}: "
        + " ".join(rng.choice(words) for _ in range(rng.randrange(1, 25)))
        + rng.choice(ends)
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(25))
def test_the_cut_is_the_one_dropping_a_line_at_a_time_keeps(seed):
    rng = random.Random(seed)
    lines = _lines(rng, rng.randrange(0, 120))
    for max_tokens in (0, 1, 7, 50, 500, 5000):
        assert newest_that_fit(lines, max_tokens) == _one_at_a_time(lines, max_tokens)


def test_a_long_transcript_is_counted_a_few_times_not_once_a_line(monkeypatch):
    lines = _lines(random.Random(1), 400)
    counted: list[str] = []

    def counting(text: str) -> int:
        counted.append(text)
        return count_text(text)

    monkeypatch.setattr(summarization, "count_text", counting)
    kept = newest_that_fit(lines, 500)
    assert 0 < len(kept) < len(lines) and kept == lines[-len(kept) :]
    assert count_text("\n".join(kept)) <= 500 < count_text("\n".join(lines[-len(kept) - 1 :]))
    assert len(counted) <= 12  # 1 + ceil(log2(401)); dropping one at a time counted ~370


def test_the_summary_keeps_its_newest_lines_within_its_budget():
    lines = _lines(random.Random(2), 300)
    summary = summarization.extractive_summary("\n".join(lines), [], 200)
    assert count_text(summary) <= 200
    kept = summary.splitlines()
    assert kept == lines[-len(kept) :] and count_text("\n".join(lines[-len(kept) - 1 :])) > 200

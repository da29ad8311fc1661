"""Chunks that follow the document's structure: one heading section at a time, paragraphs packed
up to a token budget, long paragraphs split at sentences, consecutive chunks of a section
overlapping so an answer that straddles a boundary is whole in one of them.

Sizes are counted in cl100k tokens (tiktoken, offline encoding); the default budget keeps a chunk
with its title and heading inside the embedding model's 256-word-piece window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from config.common import tokens
from memory.knowledge.parsing import Block

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 30
# A sentence ends at . ! ? ; : before a space, or at a full-width 。！？； (CJK writing puts no
# space after one): without those, Chinese or Japanese text was one "sentence" to the end of
# its paragraph, cut by tokens wherever the budget fell.
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])\s*|\n+")


count_tokens = tokens.count


@dataclass
class ChunkDraft:
    index: int
    heading: str
    text: str
    token_count: int


def _units(text: str, max_tokens: int) -> list[tuple[str, str]]:
    """Pieces of a paragraph, each within max_tokens, with what joins each to the piece before
    it. A paragraph of several lines (code, a list, a table) is cut between its lines, kept as
    lines: cut into sentences and joined with spaces, a long code block became one line with
    its indentation gone."""
    if count_tokens(text) <= max_tokens:
        return [(text, " ")]
    units: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        if count_tokens(line.rstrip()) <= max_tokens:
            units.append((line.rstrip(), "\n"))
            continue
        for number, piece in enumerate(_sentence_units(line, max_tokens)):
            units.append((piece, " " if number else "\n"))
    return units


def _sentence_units(text: str, max_tokens: int) -> list[str]:
    """A line over max_tokens in sentences, each within it (or cut by tokens)."""
    units = []
    for sentence in _SENTENCE.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if count_tokens(sentence) <= max_tokens:
            units.append(sentence)
        else:
            units += _word_windows(sentence, max_tokens)
    return units


def _word_windows(sentence: str, max_tokens: int) -> list[str]:
    """A sentence over max_tokens in pieces of at most that: cut by tokens, then each cut that
    went through a word moved back to the word's start when the next piece still fits, so a
    word is whole in one piece (a property test found "...aaabjaae" | "aa." split)."""
    pieces = tokens.windows(sentence, max_tokens)
    for i in range(len(pieces) - 1):
        head, nxt = pieces[i], pieces[i + 1]
        if not head or not nxt or head[-1].isspace() or nxt[0].isspace() or " " not in head:
            continue
        kept, _, cut = head.rpartition(" ")
        if kept.strip() and count_tokens(cut + nxt) <= max_tokens:
            pieces[i], pieces[i + 1] = kept, cut + nxt
    return [w for w in (w.strip() for w in pieces) if w]


def _tail(text: str, budget: int) -> str:
    """The end of `text` within `budget` tokens: whole lines when they fit (a code block's
    keep their breaks and indentation), else whole sentences."""
    if budget <= 0:
        return ""
    lines: list[str] = []
    used = 0
    for line in reversed(text.split("\n")):
        size = count_tokens(line)
        if used + size > budget:
            break
        lines.insert(0, line)
        used += size
    if "".join(lines).strip():
        return "\n".join(lines).strip("\n").rstrip()
    picked: list[str] = []
    used = 0
    for sentence in reversed([s for s in _SENTENCE.split(text) if s.strip()]):
        size = count_tokens(sentence)
        if used + size > budget:
            break
        picked.insert(0, sentence.strip())
        used += size
    if picked:
        return " ".join(picked)
    tail = tokens.tail(text, budget)
    # drop the word the token cut went through
    return tail.split(" ", 1)[1].strip() if " " in tail else tail.strip()


def chunk_blocks(
    blocks: list[Block],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[ChunkDraft]:
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    chunks: list[ChunkDraft] = []
    stack: list[tuple[int, str]] = []
    parts: list[str] = []
    fresh = False  # parts hold something beyond the overlap carried from the last chunk
    owner = -1  # the block the last part came from

    def heading() -> str:
        return " > ".join(text for _, text in stack)[:500]

    def emit(*, carry: bool) -> None:
        nonlocal parts, fresh, owner
        if fresh:
            text = "\n\n".join(parts)
            chunks.append(ChunkDraft(len(chunks), heading(), text, count_tokens(text)))
            tail = _tail(text, overlap_tokens) if carry else ""
        else:
            tail = ""
        parts = [tail] if tail else []
        fresh = False
        owner = owner if tail else -1

    def with_unit(text: str, number: int, joiner: str) -> list[str]:
        """The parts with `text` added: to its paragraph's last part, or as a paragraph."""
        if parts and owner == number:  # sentences of one paragraph stay one paragraph
            return [*parts[:-1], parts[-1] + joiner + text]
        return [*parts, text]

    def fits(candidate: list[str]) -> bool:
        # Counted whole: pieces' token counts do not add up across the joins ("a. a." and a
        # long word: 4 + 16 tokens apart, 21 together; a property test found it).
        return count_tokens("\n\n".join(candidate)) <= max_tokens

    for number, block in enumerate(blocks):
        if block.kind == "heading":
            emit(carry=False)
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text.strip()))
            continue
        for text, joiner in _units(block.text, max_tokens):
            candidate = with_unit(text, number, joiner)
            fit = fits(candidate)
            if not fit and fresh:
                emit(carry=True)
                candidate = with_unit(text, number, joiner)
                fit = fits(candidate)
            if not fit:  # the carried overlap leaves no room (a piece alone always fits)
                candidate = [text]
            parts, owner, fresh = candidate, number, True
    emit(carry=False)
    return chunks

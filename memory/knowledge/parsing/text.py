"""Bytes as text: UTF-8 (with a BOM, or with a few stray bytes), UTF-16 with its BOM, legacy
8-bit and East Asian encodings; None for bytes that look binary. Every format read as text
(HTML, Markdown, plain text) and the sniffing in `kinds` decode with it; it imports nothing
from the package."""

from __future__ import annotations


def decode_text(raw: bytes) -> str | None:
    """The bytes as text, or None when they look binary."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if b"\x00" in raw[:8192]:
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _mostly_utf8(raw) or _legacy_text(raw)
    sample = text[:8192]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    bad = sample.count("\ufffd")
    if sample and (control + bad) / len(sample) > 0.05:
        return None
    return text


def _legacy_text(raw: bytes) -> str:
    """Text in a legacy 8-bit or East Asian encoding: Windows-1252, unless read so it is mostly
    Latin-1 letters and symbols, which Western text never is (its accented letters are a few
    in a word) but Cyrillic, Greek or Chinese text read as Windows-1252 is ("Ïðèâåò, ìèð" for
    "Привет, мир", indexed as such): then the encoding charset_normalizer finds, when it reads
    the bytes whole. Guessed for Western text, it took "Café crème" for Windows-1250 ("crčme"),
    so it is asked only then."""
    text = raw.decode("cp1252", errors="replace")
    sample = [ch for ch in text[:8192] if not ch.isspace()]
    foreign = sum(1 for ch in sample if ord(ch) > 0x7F)
    if not sample or foreign / len(sample) < 0.4:
        return text
    import charset_normalizer

    guess = charset_normalizer.from_bytes(raw).best()
    guessed = str(guess) if guess is not None else ""
    return guessed if guessed and "\ufffd" not in guessed else text


def _mostly_utf8(raw: bytes) -> str | None:
    """UTF-8 with a few bytes that are not (a file cut inside a character, a stray Latin-1
    byte), those bytes as U+FFFD; None when the invalid sequences outnumber the valid non-ASCII
    characters (Windows-1252 text: its "é" followed by a space is never valid UTF-8). Read as
    cp1252, one such byte turned every accented letter of the document into two ("cafÃ©")."""
    text = raw.decode("utf-8-sig", errors="replace")
    invalid = text.count("\ufffd")
    valid = len(text) - len(text.encode("ascii", "ignore")) - invalid  # non-ASCII, decoded
    return text if valid > invalid else None

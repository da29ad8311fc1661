"""What PostgreSQL's english configuration makes of a question's words, and what of it a web
process keeps."""

import pytest
from django.db import connection

from memory.retrieval import terms


def _postgres(words: list[str]) -> dict[str, tuple[str, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(%s::text[]) w",
            [words],
        )
        return {w: tuple(lexemes) for w, lexemes in cursor.fetchall()}


NUMBERS = ["0", "7", "007", "2023", "123456", "9" * 19, "1" * 40, "5" * terms.NUMBER_DIGITS]
NOT_PLAIN = ["3.14", "1,000", "12th", "v2", "٣٤", "１２", "1" * (terms.NUMBER_DIGITS + 1)]


@pytest.mark.django_db
def test_every_word_gets_what_postgresql_makes_of_it():
    words = [*NUMBERS, *NOT_PLAIN, "running", "the", "Peanuts", "allergic"]
    assert terms.word_lexemes(words) == _postgres(words)


@pytest.mark.django_db
def test_numbers_are_not_kept_in_the_process(monkeypatch):
    monkeypatch.setattr(terms, "_lexemes", type(terms._lexemes)(ttl=60.0, max_entries=100))
    terms.word_lexemes([str(n) for n in range(500, 700)] + ["ferret"])
    assert len(terms._lexemes) == 1  # the word, none of the 200 numbers
    assert terms._lexemes.peek("ferret") == (True, ("ferret",))

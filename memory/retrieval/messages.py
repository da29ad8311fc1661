"""One user's past messages, ranked by the blend (memory.retrieval.fusion) in one round trip.

A turn is indexed with its neighbours (two before, two after for text; the turns just around
it, blended into its vector: memory.text.context_vector), so it is found by words it does not
repeat itself (LoCoMo dev, issue 6: the largest single gain, R@10 65 -> 78 with the blend).
Who spoke is matched by a boost instead of as a search term; pseudo-relevance feedback
re-scores the candidates on search.
"""

from __future__ import annotations

import datetime as dt
import json

from django.db import connection

from memory.retrieval import fusion, terms
from memory.text import INDEXED_CHARS

COLUMNS = ["id", "role", "name", "content", "created_at", "metadata", "conversation_id"]
_SCOPE = (
    "t.workspace_id = %(workspace)s AND t.user_id = %(user)s "
    "AND t.role IN ('user', 'assistant') AND NOT (t.id = ANY(%(exclude)s))"
)
_CONVERSATION = "JOIN memory_conversation c ON c.id = t.conversation_id"

SPEAKER_BOOST = 1.4  # a question that names who said it
# Pseudo-relevance feedback: the words the best first-pass messages share, weighted by how rare
# they are among the user's rows, re-score the first pass's candidates by BM25 and join the
# text side at this share. LoCoMo recall@10 +0.4 to +0.7 over k = 3-8 and 5-10 terms (issue 6);
# new candidates from a second full search added nothing, so only the first pass is re-scored.
FEEDBACK_TOP = 5
FEEDBACK_TERMS = 5
FEEDBACK_SHARE = 0.3


def ranked(
    *,
    workspace_id: str,
    user_id: str,
    query: str,
    vector,
    exclude_ids: list[str],
    feedback: bool = False,
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
) -> list[fusion.Ranked]:
    """The candidates, blended and ranked on each side, best first. `created_from` and
    `created_until`: only messages created in the range, in the scope of both sides (as a
    memory search's)."""
    scope = _SCOPE
    if created_from is not None:
        scope += " AND t.created_at >= %(created_from)s"
    if created_until is not None:
        scope += " AND t.created_at < %(created_until)s"
    # As search terms, the speakers' names match nearly every row of a two-person conversation
    # and only make the text scan expensive; the speaker boost matches them instead.
    speakers = terms.speaker_names(workspace_id=workspace_id, user_id=user_id)
    words = terms.spoken_words(query or "", leave_out=set(speakers))
    query_terms = terms.or_terms(words) if words else None
    stats = terms.term_stats(workspace_id=workspace_id, user_id=user_id)
    sql = fusion.statement(
        table="memory_message",
        scope=scope,
        columns=[*(f"t.{c}" for c in COLUMNS), "c.external_id"],
        joins=_CONVERSATION,
        vector="context_embedding",
    )
    rows = fusion.run(
        sql,
        {
            "workspace": workspace_id,
            "user": user_id,
            "exclude": id_array(exclude_ids),
            "created_from": created_from,
            "created_until": created_until,
        },
        terms=query_terms,
        stats=stats,
        vector=vector,
        candidates=fusion.MESSAGE_CANDIDATES,
    )
    hits = []
    for row in rows:
        # metadata stays JSON text (Django's psycopg setup leaves json as text): of ~150
        # candidates a search keeps about 20, and parses theirs (message_metadata)
        data = dict(zip(COLUMNS, row[: len(COLUMNS)], strict=True))
        if not data["content"].strip():
            # No words to show (an agent's message that only called tools, its content null
            # or "\n\n"; an image alone): no past message, since what is searchable is what
            # is shown. It was found by its neighbours' words (its window, memory.text.
            # message_window_text), at full-text rank 1 for the question of the run it served,
            # and shown as "- [date] Assistant: " and `text: ''`. Tool results (role `tool`)
            # are outside the scope alike: a run's calls and results are its execution's
            # record. Left out here, before the blend, not in SQL: rows indexed so far need no
            # backfill, and no scan of the scope reads every row's content.
            continue
        data["conversation_external_id"] = row[len(COLUMNS)]
        hits.append(fusion.Ranked(data["id"], data, similarity=row[-2], bm25=row[-1]))
    names = terms.named_in(query or "")
    boosted = {h.id for h in hits if names and (h.row["name"] or "").lower() in names}
    first = fusion.blend(
        hits, vector_share=fusion.MESSAGE_VECTOR_SHARE, boosted=boosted, boost=SPEAKER_BOOST
    )
    if not (feedback and hits):
        return first
    asked = " ".join([(query_terms or "").replace("|", " "), *speakers])
    scores = _feedback(stats=stats, asked=asked, first=first)
    if not scores:
        return first
    return fusion.blend(
        hits,
        vector_share=fusion.MESSAGE_VECTOR_SHARE,
        feedback=scores,
        feedback_share=FEEDBACK_SHARE,
        boosted=boosted,
        boost=SPEAKER_BOOST,
    )


def id_array(ids: list[str]) -> str:
    """`ids` as PostgreSQL's array text, for `= ANY(%s)`: the same array psycopg's ListDumper
    wrote, built by two joins instead of a dumper call and a quoting regex per id. A turn
    excludes every message of its conversation's history (up to 400): 300 ids cost 746 µs of
    the web's CPU to dump that way, and ~2.5M instructions a turn of regex alone (callgrind,
    bench/README.md "Thirty-second session"). Every element is quoted, so none reads as NULL
    or is cut at white space; a `"` or `\\` in an id (never in Engram's) is escaped."""
    if not ids:
        return "{}"
    joined = '","'.join(ids)
    if joined.count('"') != 2 * (len(ids) - 1) or "\\" in joined:
        joined = '","'.join(i.replace("\\", "\\\\").replace('"', '\\"') for i in ids)
    return '{"' + joined + '"}'


def message_metadata(row: dict):
    """A ranked row's metadata, parsed."""
    value = row["metadata"]
    return json.loads(value) if isinstance(value, str) else value


def _feedback(
    *, stats: terms.TermStats, asked: str, first: list[fusion.Ranked]
) -> dict[str, float]:
    """Normalized BM25 of the candidates for the first pass's telling words."""
    with connection.cursor() as cursor:
        # the part of each message its index holds: the whole of a long one (a pasted log) is
        # more than a tsvector takes (memory.text.INDEXED_CHARS)
        cursor.execute(
            "SELECT tsvector_to_array(to_tsvector('english', left(content, %s))) "
            "FROM memory_message WHERE id = ANY(%s)",
            [INDEXED_CHARS, [h.id for h in first[:FEEDBACK_TOP]]],
        )
        found = [row[0] for row in cursor.fetchall()]
    skip = {x for lexemes in terms.word_lexemes(asked.split()).values() for x in lexemes}
    counts: dict[str, int] = {}
    for lexemes in found:
        for lexeme in lexemes:
            if len(lexeme) > 2 and lexeme not in skip and lexeme in stats.df:
                counts[lexeme] = counts.get(lexeme, 0) + 1
    chosen = sorted(counts, key=lambda x: (-counts[x] * stats.idf(x), x))[:FEEDBACK_TERMS]
    if not chosen:
        return {}
    # Only the chosen lexemes of each candidate are unnested (marked A, then kept, as in
    # fusion's text side): unnesting all ~55 of each of ~150 candidates and filtering them was
    # 3.6 ms of PostgreSQL CPU per search on the LoCoMo users, this is 1.3 ms; same rows.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id, length(t.search), x.lexeme, "
            "coalesce(array_length(x.positions, 1), 1) "
            "FROM memory_message t, "
            "unnest(ts_filter(setweight(t.search, 'A', %s::text[]), '{a}')) x "
            "WHERE t.id = ANY(%s)",
            [chosen, [h.id for h in first]],
        )
        hits = cursor.fetchall()
    k1, b = fusion.BM25_K1, fusion.BM25_B
    scores: dict[str, float] = {}
    for message_id, length, lexeme, tf in hits:
        norm = k1 * (1 - b + b * length / stats.avglen)
        scores[message_id] = scores.get(message_id, 0.0) + stats.idf(lexeme) * tf * (k1 + 1) / (
            tf + norm
        )
    top = max(scores.values(), default=0.0) or 1.0
    return {k: v / top for k, v in scores.items()}

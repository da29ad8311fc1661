"""Replays a learned query adapter on a saved run: would a linear map of the question's vector,
trained on other conversations' questions and their evidence, rank the evidence higher?

    .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_adapter.py /tmp/d.json

MiniLM puts a question and the turn that answers it apart when they share little ("What does
Melanie do to destress?" -> "It's like therapy for me"). A query-side adapter (a matrix W applied
to the question's vector only, so stored vectors stay as they are) is trained to put each
question's evidence turns above the other turns of its conversation: softmax cross-entropy over
the conversation's turns (temperature TAU), positives the evidence, W = I + a penalty
lam * ||W - I||^2. For each conversation the adapter is trained on the other four only, so
every figure in a row is of questions and turns the adapter never saw; the leave-one-out choice
across rows then picks the penalty on the other four as usual.

Each message item's score gets VECTOR_SHARE x (cos(Wq, turn) - cos(q, turn)) with the turn's
dated whole vector ("[date] speaker: text", as the worker embeds it); memories keep their score
unless the row says "+ memories" (then the same lift, by their first source turn). `found k`
lets the turns nearest to the adapted question join the list (bench/probe_sentences.py's rule).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.probe_rerank import MEMORY_WEIGHT, assemble, fold_table, memory_weight, weighted  # noqa: E402
from bench.probe_sentences import VECTOR_SHARE, corpus, embed_all  # noqa: E402

TAU = 0.05  # softmax temperature over cosines (MiniLM's cosines of a question span ~0.0-0.7)
EPOCHS = 300


def train(
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    lam: float,
    rank: int | None,
    seed: int = 0,
) -> np.ndarray:
    """W (384 x 384) minimizing the evidence's softmax loss over its conversation's turns.

    `groups`: per conversation, its questions' vectors, its turns' vectors and a mask of each
    question's evidence among the turns.
    """
    import torch

    torch.manual_seed(seed)
    dim = groups[0][0].shape[1]
    data = [(torch.tensor(q), torch.tensor(t), torch.tensor(m)) for q, t, m in groups]
    count = sum(len(q) for q, _, _ in groups)
    eye = torch.eye(dim)
    if rank:
        u = torch.nn.Parameter(torch.randn(dim, rank) * 0.01)
        v = torch.nn.Parameter(torch.zeros(rank, dim))
        params = [u, v]

        def matrix():
            return eye + u @ v
    else:
        delta = torch.nn.Parameter(torch.zeros(dim, dim))
        params = [delta]

        def matrix():
            return eye + delta

    opt = torch.optim.Adam(params, lr=2e-3)
    for _ in range(EPOCHS):
        opt.zero_grad()
        w = matrix()
        loss = torch.zeros(())
        for q, bank, mask in data:
            logits = torch.nn.functional.normalize(q @ w.T, dim=1) @ bank.T / TAU
            positive = torch.logsumexp(logits.masked_fill(~mask, -1e9), 1)
            loss = loss - (positive - torch.logsumexp(logits, 1)).sum()
        loss = loss / count + lam * ((w - eye) ** 2).sum()
        loss.backward()
        opt.step()
    return matrix().detach().numpy()


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    turns_of = corpus(set(folds))
    texts = [whole for whole, _ in turns_of.values()] + [r["question"] for r in rows]
    vec = embed_all(texts, Path("/tmp/probe_sentences_cache.npz"))
    dias: dict[str, list[str]] = {}
    for sample, dia in turns_of:
        dias.setdefault(sample, []).append(dia)
    bank = {s: np.stack([vec[turns_of[s, d][0]] for d in ds]) for s, ds in dias.items()}
    index = {s: {d: i for i, d in enumerate(ds)} for s, ds in dias.items()}

    def training_set(held: str):
        groups = []
        for sample in folds:
            if sample == held:
                continue
            qs, masks = [], []
            for r in rows:
                if r["sample"] != sample:
                    continue
                p = [index[sample][d] for d in r["evidence"] if d in index[sample]]
                if p:
                    mask = np.zeros(len(dias[sample]), dtype=bool)
                    mask[p] = True
                    qs.append(vec[r["question"]])
                    masks.append(mask)
            groups.append(
                (np.stack(qs).astype(np.float32), bank[sample].astype(np.float32), np.stack(masks))
            )
        return groups

    settings = [(lam, rank) for lam in (0.01, 0.1, 1.0) for rank in (None, 16)]
    adapters: dict[tuple, dict[str, np.ndarray]] = {}
    for setting in settings:
        adapters[setting] = {}
        for held in folds:
            adapters[setting][held] = train(training_set(held), *setting)
        print(f"trained lam {setting[0]} rank {setting[1]}", flush=True)

    def variant(setting, memories: bool, found: int, share: float = VECTOR_SHARE):
        def rerank(r: dict, given: list) -> list:
            sample = r["sample"]
            q = vec[r["question"]]
            adapted = adapters[setting][sample] @ q
            adapted /= np.linalg.norm(adapted)
            old, new = bank[sample] @ q, bank[sample] @ adapted
            at = index[sample]

            def key(item):
                dia = item["sources"][0].get("dia_id") if item["sources"] else None
                if dia not in at or (item["type"] == "memory" and not memories):
                    return weighted(item)
                return weighted(item) + share * float(new[at[dia]] - old[at[dia]])

            items = list(given)
            if found:
                have = {s.get("dia_id") for it in items for s in it["sources"]}
                for i in np.argsort(-new)[:found]:
                    dia = dias[sample][i]
                    if dia not in have:
                        items.append(
                            {
                                "type": "message",
                                "score": VECTOR_SHARE * float(old[i]),
                                "sources": [{"id": f"a:{dia}", "dia_id": dia}],
                            }
                        )
            return assemble(items, key)

        return rerank

    changes = {"baseline": memory_weight(MEMORY_WEIGHT)}
    for setting in settings:
        name = f"lam {setting[0]} rank {setting[1] or 'full'}"
        changes[name] = variant(setting, False, 0)
        changes[name + " + memories"] = variant(setting, True, 0)
        changes[name + " + found 30"] = variant(setting, False, 30)
        changes[name + " x2"] = variant(setting, False, 0, 2 * VECTOR_SHARE)
    fold_table(rows, changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

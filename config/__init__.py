import os

# One BLAS thread a process (OpenBLAS reads this when numpy loads; every entry point imports
# this package first): Engram runs a web process per core and its workers beside them, and
# OpenBLAS's own threads spin on after each product. The token match's one small product
# (memory.retrieval.late) made a search's Python CPU 9.9 -> 23.8 ms a question with them
# (bench/profile_search.py), its wall time 15.8 against 17.3 ms.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from config.celery import app as celery_app

__all__ = ["celery_app"]

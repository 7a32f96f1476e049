"""The ag2-persistency benchmark (issue 5): one command, one table, raw numbers in JSON.

Run ``python -m benchmarks.run`` (see ``docs/benchmarks.md``). Not a test: it measures, on this
machine and in one process, what a checkpoint per step costs on every provider, next to two
reference points (a full snapshot per step, and LangGraph's SQLite checkpointer).
"""

"""The Personalized Semantic Judge (PSJ, algorithms.md section 3).

Stage 1, aspect evidence: `features` (item embeddings and logs, jittable) or an LLM behind an
OpenAI-compatible endpoint (`prompt`, `llm`, `cache`), read back through `store.EvidenceStore`.
"""

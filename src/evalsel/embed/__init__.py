"""Stage 2, vectors: benchmark questions and pool samples embedded (sentence-transformers, ZhipuAI embedding-3, or RDS+ hidden states)."""

"""Stage 8, reinforcement learning after SFT: GRPO/RLOO with a verifiable answer reward on guarded prompts."""

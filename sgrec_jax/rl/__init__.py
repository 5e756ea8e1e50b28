"""RL alignment of the generator: reward mixing (advantage estimators), its Pallas kernel,
rollouts and the GRPO step. The estimators' options live in rl/defaults.py."""

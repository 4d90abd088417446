"""MiniGrid experiments: recurrent PPO with RIM or LSTM memory (``rim-cells minigrid``)."""

"""Neural models of factored-attention-babyai.

Baselines (issue 13): :mod:`.film` (FiLM/GRU policy, spec §6.1) and
:mod:`.transformer_policy` (encoder–decoder Transformer, §6.2), with shared pieces in
:mod:`.common`. The part-2 modules (interaction, masking, MVProp, Q-net) live beside them.
"""

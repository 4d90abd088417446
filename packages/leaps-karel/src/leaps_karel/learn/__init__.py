"""LEAPS learning: the stage-1 program embedding, stage-2 CEM and program-space search.

Importing this package does not import torch; the modules that need it import it themselves,
and the commands that need it check for it first (`leaps-karel[learn]`).
"""

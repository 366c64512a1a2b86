"""The paper's engine: the masking model (Eq. 7 and 8), evidence removal Φ, the objective,
checkpoints, the resumable training state, torch.distributed and keyed randomness. It imports
no image-file, command-line, terminal-UI or export library."""

"""The paper's engine: the masking model (Eq. 7 and 8), evidence removal Φ, the objective,
checkpoints (and ``hf:`` ones on the Hugging Face Hub), the resumable training state,
torch.distributed and randomness keyed by purpose.

It may import the foundation alone (``rtsal``, ``rtsal.errors``, ``rtsal.device``,
``rtsal.allocator``, ``rtsal.files``, ``rtsal.boxes``), and no image-file, command-line,
terminal-UI or export library, directly or through another module: it runs wherever a tensor
can. Every other package may import it."""

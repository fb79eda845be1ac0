"""Memory planning before launch: `qilin plan` and the check `qilin run` makes first (docs/MEMORY.md)."""

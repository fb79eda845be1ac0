"""Training stages, one module each (base, cpt, sft, dpo), thin over TRL trainers."""

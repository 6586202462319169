"""`dlma export`: the aligned model as a standalone Hugging Face folder (merged weights, the
training prompt format, sampling params, model card), loadable without dlma."""

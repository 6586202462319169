"""DVC stages: each module reads its params and inputs, calls the library, writes outputs."""

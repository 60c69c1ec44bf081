"""How the embedded default was made: the corpus build (``embedded.corpus``) and the training
of the small model (``embedded.train``, with ``embedded.tokenizer`` and ``embedded.card``)."""

"""Plain-Python logic of the pipeline: messages, config, feed sources, edges. No Ray here."""

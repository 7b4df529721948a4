"""Warm helper processes for work that holds Python's GIL too often to share a process with
the renderer (x264 segments, pocketsphinx decoding). See `pool.py`."""

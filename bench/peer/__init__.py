"""The MusicVAE-style LSTM peer of issue 14 item 3: a 2-bar melody VAE (Roberts et al. 2018) trained on the
same shards as midistruct and scored by the same metric code. Not part of the package's API.

``grid`` (shard windows to MusicVAE's 32-step melody classes and back), ``model`` (the VAE),
``train`` (training with exact resume), ``evaluate`` (held-out metrics under ``midistruct evaluate``'s
names); the command line is ``bench/peer_lstm.py``.
"""

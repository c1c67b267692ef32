"""Clip features for one's own videos: I3D up to Mixed_5c, averaged (``afsd extract``).

``timeline`` (no torch) converts between feature indices and seconds; ``sources`` turns videos
and frame arrays into centre-cropped clips; ``network`` loads the I3D and encodes clips;
``extract`` runs one video and the resumable folder job.
"""

"""Helpers shared by the tests (and two benchmarks), not tests themselves: seeded weights and clips
(model_fixtures, inference_parity, extract_fixtures), the reference mAP loop (reference_map), tiny
training configs (train_helpers), synthetic videos (video_helpers), a headless-Chromium client
(devtools). Import them as ``from helpers.<module> import ...`` (tests/ is on ``sys.path``)."""

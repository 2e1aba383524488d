"""scripts/experiment_sequences_fusion.py: the SeqSLAM-style score finds the diagonal that single frames miss."""

import numpy as np

SCRIPT = "experiment_sequences_fusion.py"


def test_sequence_score_recovers_the_route_that_noisy_frames_hide(load_script):
    module = load_script(SCRIPT)
    rng = np.random.default_rng(0)
    queries, places = 60, 80
    similarity = rng.normal(0.0, 1.0, (queries, places))
    truth = np.arange(queries) + 10  # the query drive starts at database frame 10, same speed
    similarity[np.arange(queries), truth] += 1.5  # weak: a single frame often prefers a wrong place
    distances = np.abs(truth[:, None] - np.arange(places)[None]) * 3.0  # 3 m between database frames
    single = module.recall_at_1(similarity, distances, threshold_m=3.0)
    sequence = module.recall_at_1(module.sequence_scores(similarity, 10, [1.0]), distances, threshold_m=3.0)
    assert single < 40.0 and sequence >= 85.0, (single, sequence)


def test_sequence_score_of_length_one_ranks_like_the_single_frame(load_script):
    module = load_script(SCRIPT)
    similarity = np.random.default_rng(1).normal(size=(5, 7))
    assert np.array_equal(module.sequence_scores(similarity, 1, [1.0]).argmax(1), similarity.argmax(1))

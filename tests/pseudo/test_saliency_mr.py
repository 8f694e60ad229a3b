"""Manifold ranking: graph construction, the ranking formula, and a known-answer saliency map."""
from __future__ import annotations

import time

import numpy as np

from selfvos.pseudo.saliency_mr import ManifoldRankingSaliency, ranking_matrix, superpixel_graph, two_stage_ranking


def test_superpixel_graph_two_ring_and_border_loop():
    # 1x5 strip of superpixels 0..4 plus a centre-only node 5 in a 3-row image.
    labels = np.array([[0, 1, 2, 3, 4], [0, 1, 5, 3, 4], [0, 1, 2, 3, 4]])
    adj, sides = superpixel_graph(labels)
    assert adj.shape == (6, 6) and (adj == adj.T).all() and not adj.diagonal().any()
    assert adj[5, 1] and adj[5, 3]  # direct neighbours
    assert adj[5, 0] and adj[5, 4]  # neighbours of neighbours
    assert adj[0, 4]  # border loop: both touch the image border, not adjacent
    assert not sides[0, 5] and sides[0, 2] and sides[2, 0] and sides[3, 4] and not sides[2, 4]


def test_ranking_matrix_is_inverse_of_d_minus_alpha_w():
    rng = np.random.default_rng(0)
    colors = rng.uniform(0, 100, (7, 3))
    adj = np.ones((7, 7), bool)
    np.fill_diagonal(adj, False)
    inv = ranking_matrix(colors, adj, sigma2=0.1, alpha=0.99)
    d = np.sqrt(((colors[:, None] - colors[None]) ** 2).sum(-1))
    dn = (d - d[adj].min()) / (d[adj].max() - d[adj].min())
    w = np.where(adj, np.exp(-dn / 0.1), 0)
    np.testing.assert_allclose((np.diag(w.sum(1)) - 0.99 * w) @ inv, np.eye(7), atol=1e-6)


def test_two_stage_ranking_prefers_the_nodes_unlike_the_border():
    # 5x5 grid of superpixels: the 16 border nodes are grey, the 3x3 centre block is reddish.
    labels = np.arange(25).reshape(5, 5).repeat(10, 0).repeat(10, 1)
    adj, sides = superpixel_graph(labels)
    centre = np.zeros((5, 5), bool)
    centre[1:4, 1:4] = True
    centre = centre.ravel()
    colors = np.full((25, 3), 50.0)
    colors[centre] = (50.0, 70.0, 60.0)
    colors += np.random.default_rng(0).normal(0, 1, colors.shape)
    nodes = two_stage_ranking(ranking_matrix(colors, adj), sides, colors)
    assert nodes[centre].min() > 0.8 and nodes[~centre].max() < 0.2, nodes.reshape(5, 5).round(2)


def test_centred_object_is_salient_and_borders_are_not(centred_object_image):
    image, mask = centred_object_image
    start = time.perf_counter()
    sal = ManifoldRankingSaliency().saliency(image)
    elapsed = time.perf_counter() - start
    assert sal.shape == mask.shape and sal.dtype == np.float32 and 0 <= sal.min() and sal.max() <= 1
    border = np.concatenate([sal[:4].ravel(), sal[-4:].ravel(), sal[:, :4].ravel(), sal[:, -4:].ravel()])
    assert sal[mask].mean() > 0.7, sal[mask].mean()
    assert border.mean() < 0.1, border.mean()
    pred = sal >= 0.5
    assert (pred & mask).sum() / (pred | mask).sum() > 0.8
    assert elapsed < 2.0


def test_rank_from_prior_spreads_a_partial_prior_over_the_object(centred_object_image):
    image, mask = centred_object_image
    prior = np.zeros(mask.shape, np.float32)
    prior[50:70, 70:90] = 1.0  # a small patch inside the ellipse only
    ranked = ManifoldRankingSaliency().rank_from_prior(image, prior)
    assert ranked[mask].mean() > 0.6 and ranked[~mask].mean() < 0.15

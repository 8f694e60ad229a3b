"""YouTube-VIS evaluation (:mod:`selfvos.eval.vis`): hand-computed AP/AR, video IoU, RLE, the DAVIS converter,
the CLI, and parity with the reference implementation's printed numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvos.cli import main
from selfvos.data.sources import open_source
from selfvos.errors import SelfvosInputError
from selfvos.eval.vis import (
    STAT_NAMES,
    check_ground_truth,
    davis_to_vis,
    decode_rle,
    encode_rle,
    encode_track,
    evaluate_vis,
    frame_areas,
    read_vis_gt,
    read_vis_results,
    result_record,
    video_iou,
    write_vis_json,
)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """(h, w) uint8 mask with rows y0..y1-1 and columns x0..x1-1 set."""
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def track(*masks) -> np.ndarray:
    return np.stack(masks)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """The official ground truth's RLE: run lengths over the column-major pixels, starting with a 0-run."""
    flat = np.asarray(mask, bool).flatten(order="F")
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a new run begins
    counts = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": [0] + counts if flat[0] else counts}


def gt_annotation(ann_id: int, video_id: int, category_id: int, masks, present=None, iscrowd: int = 0,
                  uncompressed: bool = False) -> dict:
    segs = encode_track(np.asarray(masks), present)
    if uncompressed:
        segs = [uncompressed_rle(m) if s else None for m, s in zip(masks, segs)]
    return {"id": ann_id, "video_id": video_id, "category_id": category_id, "iscrowd": iscrowd,
            "segmentations": segs, "areas": frame_areas(encode_track(np.asarray(masks), present))}


# ---------------------------------------------------------------------------------- hand-computed fixture

H = W = 10
Z = np.zeros((H, W), np.uint8)
G1 = rect(H, W, 0, 5, 0, 5)  # 25 px
G2 = rect(H, W, 5, 10, 5, 10)  # 25 px
G3 = rect(H, W, 0, 10, 0, 5)  # 50 px
P3 = rect(H, W, 0, 10, 0, 4) | rect(H, W, 0, 5, 5, 6)  # 40 px inside G3 + 5 outside: IoU 40/55 per frame


def hand_fixture():
    """3 videos x 3 frames (video 3 has no ground truth), categories person / dog / cat (cat: no ground truth).

    person: g1 (video 1), g3 (video 2); dog: g2 (video 1, absent on frame 2).
    results: p4 person v3 0.95 (FP, no GT there); p1 person v1 0.90 = g1 (IoU 1); p2 dog v1 0.80 = g2 plus frame 2
    (IoU 50/75 = 2/3); p3 person v2 0.70 (IoU 120/165 = 8/11 = 0.727); p5 person v1 0.60 = g1 again (duplicate:
    FP); p6 dog v2 0.50 with no mask on any frame (FP).
    """
    videos = [{"id": v, "height": H, "width": W, "length": 3} for v in (1, 2, 3)]
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cat"}]
    anns = [gt_annotation(1, 1, 1, track(G1, G1, G1)),
            gt_annotation(2, 1, 2, track(G2, G2, Z), present=[True, True, False]),
            gt_annotation(3, 2, 1, track(G3, G3, G3), uncompressed=True)]
    gt = {"videos": videos, "categories": cats, "annotations": anns}
    results = [result_record(3, 1, 0.95, track(rect(H, W, 0, 3, 0, 3), Z, Z), present=[True, False, False]),
               result_record(1, 1, 0.90, track(G1, G1, G1)),
               result_record(1, 2, 0.80, track(G2, G2, G2)),
               result_record(2, 1, 0.70, track(P3, P3, P3)),
               result_record(1, 1, 0.60, track(G1, G1, G1)),
               result_record(2, 2, 0.50, track(Z, Z, Z), present=[False, False, False])]
    return gt, results


# person, thresholds 0.50..0.70 (IoU 8/11 >= t): FP, TP, TP, FP -> interpolated precision 2/3 at every recall;
# thresholds 0.75..0.95: FP, TP, FP, FP -> precision 1/2 up to recall 0.5 (51 of 101 points), then 0.
AP_PERSON = (5 * (2 / 3) + 5 * (51 * 0.5 / 101)) / 10
# dog, thresholds 0.50..0.65 (IoU 2/3 >= t): TP, FP -> precision 1 at every recall; 0.70..0.95: nothing matched.
AP_DOG = 4 / 10
# recall: person 1 at 5 thresholds and 1/2 at 5; dog 1 at 4 thresholds and 0 at 6 (the best result per video
# already holds every match, so AR1 = AR10 = AR100).
AR_PERSON, AR_DOG = (5 * 1 + 5 * 0.5) / 10, 4 / 10


def test_hand_computed_ap_ar():
    gt, results = hand_fixture()
    res = evaluate_vis(gt, results)
    s = res.stats
    assert s["AP"] == pytest.approx((AP_PERSON + AP_DOG) / 2, abs=1e-9)
    assert s["AP50"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-9)
    assert s["AP75"] == pytest.approx((51 * 0.5 / 101 + 0) / 2, abs=1e-9)
    assert s["APs"] == pytest.approx(s["AP"], abs=1e-12)  # every instance has a mean area <= 128^2
    assert s["APm"] == s["APl"] == s["ARm"] == s["ARl"] == -1  # no ground truth in those ranges
    for key in ("AR1", "AR10", "AR100", "ARs"):
        assert s[key] == pytest.approx((AR_PERSON + AR_DOG) / 2, abs=1e-9), key
    assert res.per_category["person"] == pytest.approx(AP_PERSON, abs=1e-9)
    assert res.per_category["dog"] == pytest.approx(AP_DOG, abs=1e-9)
    assert res.per_category["cat"] is None  # no ground truth: left out of the means
    assert (res.videos, res.categories, res.instances, res.predictions) == (3, 3, 3, 6)


def test_ar1_keeps_the_best_result_per_video():
    gt, results = hand_fixture()
    # a low-score exact copy of g3 in video 2 matches at every threshold, but only AR10 / AR100 see it
    results.append(result_record(2, 1, 0.10, track(G3, G3, G3)))
    s = evaluate_vis(gt, results).stats
    assert s["AR1"] == pytest.approx((AR_PERSON + AR_DOG) / 2, abs=1e-9)
    assert s["AR10"] == s["AR100"] == pytest.approx((1.0 + AR_DOG) / 2, abs=1e-9)


def test_empty_results_score_zero():
    gt, _ = hand_fixture()
    s = evaluate_vis(gt, []).stats
    assert s["AP"] == s["AP50"] == s["AR1"] == s["AR100"] == 0.0
    assert s["APm"] == -1


def test_perfect_results_score_one():
    gt, _ = hand_fixture()
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.5,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    s = evaluate_vis(gt, results).stats
    assert s["AP"] == pytest.approx(1.0) and s["AR1"] == pytest.approx(1.0)


def test_crowd_ground_truth_is_ignored():
    gt, results = hand_fixture()
    # a crowd person in video 3 over the FP p4: p4 now matches an ignored instance and stops counting as an FP
    gt["annotations"].append(gt_annotation(4, 3, 1, track(rect(H, W, 0, 3, 0, 3), Z, Z), present=[True, False, False],
                                           iscrowd=1))
    s = evaluate_vis(gt, results)
    # person: TP, TP, FP at thresholds <= 0.70 (precision 1 to recall 1) and TP, FP, FP above (1 to recall 1/2)
    ap_person = (5 * 1 + 5 * (51 / 101)) / 10
    assert s.per_category["person"] == pytest.approx(ap_person, abs=1e-9)


def test_inputs_not_modified():
    gt, results = hand_fixture()
    before = json.dumps([gt, results])
    evaluate_vis(gt, results)
    assert json.dumps([gt, results]) == before


# ------------------------------------------------------------------------------------------- video IoU


def test_video_iou_hand_computed():
    a = rect(H, W, 0, 4, 0, 4)  # 16 px
    b = rect(H, W, 2, 6, 2, 6)  # 16 px, 4 px in common with a
    d = encode_track(track(a, a, Z, a), present=[True, True, False, True])
    g = encode_track(track(b, a, Z, Z), present=[True, True, False, False])
    # frame 0: I 4, U 28; frame 1: I 16, U 16; frame 2: both absent (skipped); frame 3: only d, U 16
    assert video_iou(d, g, H, W) == pytest.approx((4 + 16) / (28 + 16 + 16), abs=1e-15)
    # frames after the shorter track are not compared (the reference zips the two lists)
    assert video_iou(d[:2], g, H, W) == pytest.approx((4 + 16) / (28 + 16), abs=1e-15)
    assert video_iou([None, None], [None, None], H, W) == 0.0
    # uncompressed ground truth and polygons give the same masks
    assert video_iou(d, [uncompressed_rle(b), uncompressed_rle(a), None, None], H, W) == \
        pytest.approx(20 / 60, abs=1e-15)
    square = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]
    assert decode_rle(square, H, W).sum() > 0


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    mask = (rng.random((37, 53)) > 0.6).astype(np.uint8)
    rle = encode_rle(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle, 37, 53), mask)
    np.testing.assert_array_equal(decode_rle(uncompressed_rle(mask), 37, 53), mask)
    json.dumps(rle)  # JSON-ready
    assert frame_areas([rle, None]) == [int(mask.sum()), None]


def test_write_and_read_round_trip(tmp_path):
    gt, results = hand_fixture()
    gt_path, res_path = write_vis_json(tmp_path / "gt.json", gt), write_vis_json(tmp_path / "res.json", results)
    gt2 = read_vis_gt(gt_path)
    assert gt2 == json.loads(json.dumps(gt))
    assert evaluate_vis(gt2, read_vis_results(res_path, gt2)).stats == evaluate_vis(gt, results).stats


@pytest.mark.parametrize("mutate, message", [
    (lambda gt, res: res[0].update(video_id=99), "video_id 99 is not a video"),
    (lambda gt, res: res[0].update(category_id=7), "category_id 7 is not a category"),
    (lambda gt, res: res[0].update(score=float("nan")), "'score' must be a finite number"),
    (lambda gt, res: res[1]["segmentations"].pop(), "2 segmentations for a video of 3 frames"),
    (lambda gt, res: res[1]["segmentations"].__setitem__(0, encode_rle(np.ones((4, 4)))), "mask is 4x4"),
])
def test_bad_results_name_the_file(tmp_path, mutate, message):
    gt, results = hand_fixture()
    mutate(gt, results)
    path = write_vis_json(tmp_path / "res.json", results)
    with pytest.raises(SelfvosInputError) as info:
        read_vis_results(path, gt)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_bad_ground_truth():
    gt, _ = hand_fixture()
    gt["annotations"][1]["id"] = 1
    with pytest.raises(SelfvosInputError, match="annotation id appears twice"):
        check_ground_truth(gt, "gt.json")
    gt, _ = hand_fixture()
    gt["annotations"][0]["id"] = 0
    with pytest.raises(SelfvosInputError, match="positive integer 'id'"):
        check_ground_truth(gt, "gt.json")
    gt, _ = hand_fixture()
    gt["annotations"][2]["segmentations"][1]["counts"][-1] += 1  # uncompressed runs no longer cover 10x10
    with pytest.raises(SelfvosInputError, match=r"annotations\[2\] \(id 3\): segmentations\[1\]: uncompressed"):
        check_ground_truth(gt, "gt.json")


# ----------------------------------------------------------------------------------------- DAVIS -> VIS


def _tiny_davis(root: Path) -> Path:
    """Two sequences of 3 frames, 6x8, palette masks: "a" with objects 1 and 2 (2 absent on frame 1, void
    pixels on frame 0), "b" with object 3 only."""
    for seq, frames in {
        "a": [{1: (0, 2, 0, 3), 2: (4, 6, 5, 8)}, {1: (0, 2, 1, 4)}, {1: (1, 3, 0, 3), 2: (3, 6, 6, 8)}],
        "b": [{3: (2, 4, 2, 6)}] * 3,
    }.items():
        (root / "JPEGImages" / seq).mkdir(parents=True)
        (root / "Annotations" / seq).mkdir(parents=True)
        for i, objects in enumerate(frames):
            Image.fromarray(np.full((6, 8, 3), 30 * i, np.uint8)).save(root / "JPEGImages" / seq / f"{i:05d}.jpg")
            ids = np.zeros((6, 8), np.uint8)
            for obj, (y0, y1, x0, x1) in objects.items():
                ids[y0:y1, x0:x1] = obj
            if seq == "a" and i == 0:
                ids[5, 0] = 255
            img = Image.fromarray(ids, mode="P")
            img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255, 255, 255] * 252)
            img.save(root / "Annotations" / seq / f"{i:05d}.png")
    return root


def test_davis_to_vis_tracks(tmp_path):
    root = _tiny_davis(tmp_path / "davis")
    gt = davis_to_vis(open_source(f"davis:{root}"))
    check_ground_truth(gt)
    assert [(v["id"], v["name"], v["height"], v["width"], v["length"]) for v in gt["videos"]] == \
        [(1, "a", 6, 8, 3), (2, "b", 6, 8, 3)]
    assert gt["videos"][0]["file_names"] == ["a/00000.jpg", "a/00001.jpg", "a/00002.jpg"]
    assert gt["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    anns = gt["annotations"]
    assert [(a["id"], a["video_id"], a["object_id"], a["category_id"]) for a in anns] == \
        [(1, 1, 1, 1), (2, 1, 2, 1), (3, 2, 3, 1)]
    assert anns[1]["segmentations"][1] is None and anns[1]["areas"] == [6, None, 6]
    assert anns[0]["areas"] == [6, 6, 6] and anns[0]["bboxes"][1] == [1.0, 0.0, 3.0, 2.0]
    np.testing.assert_array_equal(decode_rle(anns[0]["segmentations"][2], 6, 8), rect(6, 8, 1, 3, 0, 3))
    # scored against itself, every track is found
    results = [{"video_id": a["video_id"], "category_id": 1, "score": 1.0, "segmentations": a["segmentations"]}
               for a in anns]
    assert evaluate_vis(gt, results).stats["AP"] == pytest.approx(1.0)


@pytest.mark.shared_data
def test_davis2017_schoolgirls_converts():
    from tests.conftest import shared_path

    collection = open_source(f"davis:{shared_path('davis2017-multi')}", max_side=120)
    gt = davis_to_vis(collection)
    check_ground_truth(gt)
    assert len(gt["annotations"]) == 7 and {a["object_id"] for a in gt["annotations"]} == set(range(1, 8))


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_vis_prints_and_writes_json(tmp_path, capsys):
    gt, results = hand_fixture()
    gt_path, res_path = write_vis_json(tmp_path / "gt.json", gt), write_vis_json(tmp_path / "res.json", results)
    out_json = tmp_path / "scores.json"
    code = main(["evaluate", "--task", "vis", "--gt", str(gt_path), "--pred", str(res_path), "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.430" in out
    doc = json.loads(out_json.read_text())
    assert doc["task"] == "vis" and set(doc["stats"]) == set(STAT_NAMES)
    assert doc["stats"]["AP"] == pytest.approx((AP_PERSON + AP_DOG) / 2, abs=1e-9)
    assert doc["per_category_AP"]["cat"] is None


def test_cli_vis_errors_are_one_line(tmp_path, capsys):
    gt, results = hand_fixture()
    gt_path = write_vis_json(tmp_path / "gt.json", gt)
    bad = tmp_path / "res.json"
    bad.write_text("[{\"video_id\": 1,")
    code = main(["evaluate", "--task", "vis", "--gt", str(gt_path), "--pred", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"selfvos: error: {bad}: not valid JSON") and "Traceback" not in err
    code = main(["evaluate", "--task", "vis", "--gt", str(tmp_path / "missing.json"), "--pred", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"selfvos: error: {tmp_path / 'missing.json'}: no such file"
    code = main(["evaluate", "--task", "vis", "--gt", str(gt_path), "--pred", str(bad), "--plot", "x.png"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--plot" in err and "--task davis" in err


# --------------------------------------------------------------------------------------- reference parity


Z240 = np.zeros((240, 320), np.uint8)


def parity_fixture():
    """Deterministic fixture for the comparison with the reference: 5 videos of 6 frames (240x320; video 5 has
    no ground truth), 4 categories (4 has no ground truth), instances of all three area ranges, frames where an
    instance is absent, a crowd instance, uncompressed-RLE ground truth, tied scores, a result with no mask at
    all, and 12 results on one video and category (maxDets 1 / 10 / 100 differ)."""
    h, w, t_len = 240, 320, 6
    videos = [{"id": v, "height": h, "width": w, "length": t_len} for v in range(1, 6)]
    cats = [{"id": c, "name": n} for c, n in enumerate(("person", "dog", "car", "unused"), start=1)]

    def box(v, n, t, dy=0, dx=0, grow=0):
        bh = min(h, 10 + (37 * v + 53 * n) % 220 + grow)
        bw = min(w, 10 + (41 * v + 31 * n) % 300 + grow)
        y0 = min(max((17 * v + 29 * n + 3 * t + dy) % max(1, h - bh + 1), 0), h - bh)
        x0 = min(max((23 * v + 41 * n + 5 * t + dx) % max(1, w - bw + 1), 0), w - bw)
        return rect(h, w, y0, y0 + bh, x0, x0 + bw)

    anns, results = [], []
    for v in range(1, 5):
        for n in range(2 + v % 3):
            cat = 1 + (v + n) % 3
            present = [(v + n + t) % 5 != 0 for t in range(t_len)]
            masks = track(*[box(v, n, t) if p else Z240 for t, p in enumerate(present)])
            anns.append(gt_annotation(len(anns) + 1, v, cat, masks, present, iscrowd=int(v == 2 and n == 1),
                                      uncompressed=(v + n) % 2 == 0))
            jitter = [(v * n + t) % 9 - 4 for t in range(t_len)]
            pred_present = [p or t == 5 for t, p in enumerate(present)]
            pred = track(*[box(v, n, t, dy=j, dx=-j, grow=(v + n) % 4 * 6) if p else Z240
                           for t, (p, j) in enumerate(zip(pred_present, jitter))])
            score = round(0.05 + ((7 * v + 3 * n) % 10) / 10, 2)
            results.append(result_record(v, cat, score, pred, pred_present))
            if n == 0:  # a second, worse guess of the same instance, with the wrong class on video 3
                shifted = track(*[box(v, n, t, dy=25, dx=30) for t in range(t_len)])
                results.append(result_record(v, 1 + (cat % 3) if v == 3 else cat, round(score / 2, 2), shifted))
    # video 1, person (instance n=2): 10 shifted candidates, then two exact copies ranked 11th and 12th, the last
    # tied at 0.35 with the jittered guess above (a stable sort keeps the file order)
    person = next(a for a in anns if a["video_id"] == 1 and a["category_id"] == 1)
    for k in range(12):
        if k < 10:
            masks = track(*[box(1, 2, t, dy=8 * (k + 1), dx=-6 * (k + 1)) for t in range(t_len)])
            results.append(result_record(1, 1, round(0.9 - 0.05 * k, 2), masks))
        else:
            results.append({"video_id": 1, "category_id": 1, "score": round(0.9 - 0.05 * k, 2),
                            "segmentations": [encode_rle(decode_rle(s, h, w)) if s else None
                                              for s in person["segmentations"]]})
    big = track(*[rect(h, w, 4 + t, 236, 6, 300 + t) for t in range(t_len)])  # large: mean area > 256^2
    anns.append(gt_annotation(len(anns) + 1, 4, 2, big))
    results.append(result_record(4, 2, 0.6, track(*[rect(h, w, 0, 235, 10, 310) for t in range(t_len)])))
    results.append(result_record(5, 2, 0.77, track(*[box(5, 0, t) for t in range(t_len)])))  # no GT in video 5
    results.append(result_record(4, 3, 0.33, track(*[Z240] * t_len), [False] * t_len))  # no mask at all
    return {"videos": videos, "categories": cats, "annotations": anns}, results


# Printed by the reference implementation on parity_fixture() and on hand_fixture() (REFERENCE_HAND_STATS, person
# 0.45957095709570955, dog 0.39999999999999997: the values computed by hand above).
# Source: PythonAPI/pycocotools/ytvos.py and PythonAPI/pycocotools/ytvoseval.py of the youtubevos cocoapi fork, as
# carried by github.com/lxtGH/cocoapi at commit 324f301c97d34bc3235380555261d88916773a55 (the same evaluate,
# computeIoU, evaluateVid, accumulate and Params as github.com/wjf5203/cocoapi at e241baab). Run from a copy outside the repository, as a package whose
# `from . import mask as maskUtils` is pycocotools 2.0.11's mask, with two numpy-2 edits only (same values):
# `np.float` -> `np.float64` in accumulate, `np.round(x) + 1` -> `int(np.round(x)) + 1` in the linspace counts.
# Command (Python 3.11, numpy 2.4.6):
#   gt, res = parity_fixture(); json.dump(gt, open("gt.json", "w")); json.dump(res, open("res.json", "w"))
#   G = YTVOS("gt.json"); E = YTVOSeval(G, G.loadRes("res.json")); E.evaluate(); E.accumulate(); E.summarize()
#   print(repr(E.stats.tolist()))
#   # AP per category: s = E.eval["precision"][:, :, k, 0, -1]; mean(s[s > -1]), None when no s > -1
REFERENCE_STATS = [0.3342080618318242, 0.6093876054272094, 0.20150348368170146, 0.3768976897689768,
                   0.42737873787378733, 0.8999999999999999, 0.3938888888888889, 0.5038888888888888, 0.615,
                   0.43333333333333335, 0.8, 0.9]
REFERENCE_HAND_STATS = [0.4297854785478547, 0.8333333333333333, 0.12623762376237624, 0.4297854785478547, -1.0, -1.0,
                        0.575, 0.575, 0.575, 0.575, -1.0, -1.0]
REFERENCE_PER_CATEGORY = {"person": 0.09085300837776085, "dog": 0.622002200220022, "car": 0.2897689768976897,
                          "unused": None}


def test_reference_parity():
    hand = evaluate_vis(*hand_fixture())
    assert [hand.stats[k] for k in STAT_NAMES] == pytest.approx(REFERENCE_HAND_STATS, abs=1e-6)
    gt, results = parity_fixture()
    res = evaluate_vis(gt, results)
    assert [res.stats[k] for k in STAT_NAMES] == pytest.approx(REFERENCE_STATS, abs=1e-6)
    assert res.per_category.keys() == REFERENCE_PER_CATEGORY.keys()
    for name, ap in REFERENCE_PER_CATEGORY.items():
        assert res.per_category[name] is None if ap is None else res.per_category[name] == pytest.approx(ap, abs=1e-6)
    # the fixture reaches every part of the summary: all area ranges, and AR1 < AR10 < AR100
    assert min(res.stats.values()) > 0 and res.stats["AR1"] < res.stats["AR10"] < res.stats["AR100"]

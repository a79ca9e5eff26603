"""Training options that reproduce the authors' base as coded (BCE on sampled negatives), at tiny scale."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import yaml

from persona_sim.cli import main
from persona_sim.scenario.schema import TrainSpec
from persona_sim.train.training import sampled_loss


def test_bce_is_the_mean_over_the_positive_and_its_own_negatives():
    item_emb = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    u, pos = torch.randn(2, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([2, 5])
    spec = TrainSpec(loss="bce", sampled_negatives=2)
    loss = sampled_loss(u, pos, item_emb, spec, torch.Generator().manual_seed(9))
    neg = torch.randint(1, 7, (2, 2), generator=torch.Generator().manual_seed(9))      # the same draws
    terms = [-F.logsigmoid(u[i] @ item_emb[pos[i]]) for i in range(2)]
    terms += [-F.logsigmoid(-(u[i] @ item_emb[neg[i, j]])) for i in range(2) for j in range(2)]
    assert torch.allclose(loss, torch.stack(terms).sum() / 6)
    ce = sampled_loss(u, pos, item_emb, TrainSpec(sampled_negatives=2), torch.Generator().manual_seed(9))
    assert not torch.allclose(ce, loss)


def test_authors_style_base_trains_and_evaluates_under_both_protocols(tiny_dict, tmp_path):
    tiny_dict["model"] = {"hidden": 8, "blocks": 1, "heads": 4, "max_len": 4, "dropout": 0.0}
    tiny_dict["train"] = {**tiny_dict["train"], "loss": "bce", "sampled_negatives": 1, "batch_size": 256}
    for protocol in ("leave-one-out", "realtime"):
        tiny_dict["eval"] = {"negatives": 20, "protocol": protocol}
        path = tmp_path / f"{protocol}.yaml"
        path.write_text(yaml.safe_dump(tiny_dict))
        assert main(["eval", str(path), "--out", str(tmp_path / protocol), "--quiet"]) == 0
        summary = json.loads((tmp_path / protocol / "summary.json").read_text())
        for m in summary["methods"].values():
            assert 0.0 < m["auc"] <= 1.0 and 0.0 <= m["ndcg@5"] <= m["ndcg@10"] <= 1.0

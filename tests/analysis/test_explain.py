"""explain(): the blocked groups, the op and layer that block each, the MACs at stake."""
import json

import paddle
import paddle.nn as nn

from slim_callbacks import explain
from slim_callbacks.app.cli import main


class CumprodMix(nn.Layer):
    def forward(self, x):
        return paddle.cumprod(x, dim=1)  # the tracer has no rule for cumprod


class UnknownOpNet(nn.Layer):
    """a -> cumprod (in sublayer "mix") -> b -> pool -> flatten -> fc."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 1)
        self.mix = CumprodMix()
        self.b = nn.Conv2D(8, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = self.pool(self.b(self.mix(self.a(x))))
        return self.fc(paddle.flatten(y, 1))


def test_unknown_op_blocks_its_producer_with_the_macs_by_hand():
    report = explain(UnknownOpNet(), [2, 3, 4, 4])
    # 16 positions: a = 16 * 8*3 = 384, b = 16 * 6*8*9 = 6912; fc = 6*5 = 30 (per sample)
    assert report.total_macs == 384 + 6912 + 30
    rows = [(r.group, r.channels, r.op, r.layer, r.macs) for r in report.rows]
    # b's inputs come out of cumprod, unmapped: they are not a's channels, so only a's
    # own rows are at stake (a lower bound)
    assert rows == [("a", 8, "cumprod", "mix", 384), ("fc", 5, "network output", "", 30)]
    assert "cumprod" in report.rows[0].reason
    assert report.rows[0].share == 384 / report.total_macs
    assert report.channels == 8 + 6 + 5 and report.blocked_channels == 13
    assert report.blocked_macs == 384 + 30
    assert report.by_op() == [("cumprod", 1, 384), ("network output", 1, 30)]


class GroupedNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2D(4, 8, 1), nn.Conv2D(8, 8, 3, padding=1, groups=2),
                         nn.Conv2D(8, 4, 1))


def test_a_grouped_conv_no_longer_blocks_either_side():
    """Grouped convs are pruned by position (tests/tracing/test_grouped.py): only the output
    group is left, with conv 2's rows at stake."""
    report = explain(GroupedNet(), [1, 4, 4, 4])
    assert [(r.group, r.op) for r in report.rows] == [("2", "network output")]
    assert report.total_macs == 16 * (32 + 288 + 32)
    assert report.blocked_macs == 16 * 4 * 8


class LiteralReshapeHead(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 4, 1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(paddle.reshape(self.a(x), [-1, 16]))  # 16 = 4 channels x 2 x 2


def test_literal_reshape_head_is_blamed_on_reshape_at_top_level():
    report = explain(LiteralReshapeHead(), [1, 3, 2, 2])
    row = next(r for r in report.rows if r.group == "a")
    assert row.op == "reshape" and row.layer == "the top-level network"
    assert row.macs == 4 * 4 * 3 + 16 * 3  # a's rows, fc's 16 input columns
    text = report.table()
    assert "(top level)" in text and "reshape" in text
    assert "2 blocked groups with 7 of 7 channels (100.0%)" in text


def test_explain_leaves_the_network_unchanged():
    net = UnknownOpNet()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    explain(net, [1, 3, 4, 4])
    assert all((net.state_dict()[k].numpy() == v).all() for k, v in before.items())


def test_plan_explain_cli_text_and_json(capsys):
    assert main(["plan", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "recipe quickstart" in out and "network output" in out
    assert main(["plan", "--explain", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["group"] for row in result["rows"]] == ["fc"]
    assert result["rows"][0]["macs"] == 256 * 10  # quickstart head: Linear(256, 10)
    assert result["blocked_macs"] == 2560 and result["by_op"] == [["network output", 1, 2560]]

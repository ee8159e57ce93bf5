import sys, time, warnings, logging
warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks")
import paddle
from vit import vit
from slim_callbacks import trace
import slim_callbacks
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
print(slim_callbacks.__file__, file=sys.stderr)
paddle.seed(0)
net = vit("ViT-S")
t = time.perf_counter(); g = trace(net, [1, 3, 224, 224]); tt = time.perf_counter() - t
t = time.perf_counter(); r = uniform_ratio(net, [1, 3, 224, 224], 0.5, graph=g); tu = time.perf_counter() - t
import json; print(json.dumps({"trace": tt, "uniform_ratio -50%": tu, "ratio": r}))

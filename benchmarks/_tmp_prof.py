import sys, time, warnings, cProfile, pstats
warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks")
import paddle
from vit import vit
from slim_callbacks import trace
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
paddle.seed(0)
net = vit("ViT-S")
pr = cProfile.Profile(); pr.enable()
g = trace(net, [1, 3, 224, 224])
pr.disable(); pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
pr = cProfile.Profile(); pr.enable()
r = uniform_ratio(net, [1, 3, 224, 224], 0.5, graph=g)
pr.disable(); pstats.Stats(pr).sort_stats("cumulative").print_stats(30)

"""A PaddleSlim user's script in the style of PaddleSlim's dygraph filter-pruning
tutorial (MobileNetV1, sensitivity analysis, sensitive_prune, fine-tuning), written for
this project with offline data and tiny sizes. It imports ``paddleslim``; the test runs
it with only the import lines changed to ``slim_callbacks.paddleslim``."""
from __future__ import print_function

import numpy as np
import paddle
import paddle.vision.transforms as T
from paddle.static import InputSpec as Input
from paddle.vision.models import mobilenet_v1
from paddleslim.analysis import dygraph_flops
from paddleslim.dygraph import L1NormFilterPruner

SEN_FILE = "./sen.pickle"  # the test runs the script in a temporary directory

# 1. the model
paddle.seed(0)
net = mobilenet_v1(pretrained=False, scale=0.25, num_classes=10)
paddle.summary(net, (1, 3, 16, 16))


# 2. the data: offline stand-ins for Cifar10 (a bright quadrant tells the class)
class FakeCifar(paddle.io.Dataset):
    def __init__(self, count, seed, transform):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 4, count)
        self.images = rng.integers(0, 96, (count, 16, 16, 3)).astype("float32")
        for image, label in zip(self.images, self.labels):
            row, col = divmod(int(label), 2)
            image[row * 8:row * 8 + 8, col * 8:col * 8 + 8] += 150
        self.transform = transform

    def __getitem__(self, index):
        return self.transform(self.images[index]), np.array([self.labels[index]], dtype="int64")

    def __len__(self):
        return len(self.labels)


transform = T.Compose([T.Transpose(), T.Normalize([127.5], [127.5])])
train_dataset = FakeCifar(32, 0, transform)
val_dataset = FakeCifar(16, 1, transform)
print(f'train samples count: {len(train_dataset)}')
for data in train_dataset:
    print(f'image shape: {data[0].shape}; label: {data[1]}')
    break

# 3. training
optimizer = paddle.optimizer.Momentum(learning_rate=0.1, parameters=net.parameters())
inputs = [Input([None, 3, 16, 16], 'float32', name='image')]
labels = [Input([None, 1], 'int64', name='label')]
model = paddle.Model(net, inputs, labels)
model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy(topk=(1, 5)))
model.fit(train_dataset, epochs=1, batch_size=16, verbose=0)
result = model.evaluate(val_dataset, batch_size=16, verbose=0)
print(result)

# 4. pruning
pruner = L1NormFilterPruner(net, [1, 3, 16, 16], opt=optimizer)


def eval_fn():
    result = model.evaluate(val_dataset, batch_size=16, verbose=0)
    return result['acc_top1']


pruner.sensitive(eval_func=eval_fn, sen_file=SEN_FILE)
print(pruner.sensitive())

flops = dygraph_flops(net, [1, 3, 16, 16])
print(f"FLOPs before pruning: {flops}")
plan = pruner.sensitive_prune(0.4, skip_vars=[net.conv6._pointwise_conv[0].weight.name])
pruned = dygraph_flops(net, [1, 3, 16, 16])
print(f"FLOPs after pruning: {pruned}")
print(f"Pruned FLOPs: {round(plan.pruned_flops * 100, 2)}%")

result = model.evaluate(val_dataset, batch_size=16, verbose=0)
print(f"before fine-tuning: {result}")
model.fit(train_dataset, epochs=1, batch_size=16, verbose=0)
result = model.evaluate(val_dataset, batch_size=16, verbose=0)
print(f"after fine-tuning: {result}")
paddle.summary(net, (1, 3, 16, 16))

# %% [markdown]
# # 2. The autograd engine
#
# Everything in tinyw2v2 (convolutions, attention, the quantiser, the losses) is trained by one small
# engine: reverse-mode automatic differentiation. This notebook builds a scalar version inline in thirty
# lines, then shows the library's own `Tensor` and `Function`, the graph they record, the topological order
# of the backward pass, how broadcasting is undone, `no_grad`, and how every hand-written backward is checked
# against finite differences, and why that check uses float64 and a random upstream gradient.
#
# Derivations for each op family are in [`docs/`](../docs/); the engine itself is described in
# [`docs/engine.md`](../docs/engine.md).

# %%
import numpy as np
import matplotlib.pyplot as plt
import tinyw2v2 as tw
from tinyw2v2 import ops

# %% [markdown]
# ## A scalar engine in thirty lines
#
# Each value remembers the values it was made from and a closure that, given the upstream gradient
# $\bar y = \partial L/\partial y$, adds $\bar y \cdot \partial y/\partial x$ into each parent's gradient. The
# backward pass visits nodes in reverse topological order, so that a node's gradient is complete (summed over
# all its uses) before it is passed on.

# %%
import math

class Value:
    def __init__(self, data, parents=()):
        self.data, self.grad, self.parents, self._backward = data, 0.0, parents, lambda: None

    def __add__(self, other):
        out = Value(self.data + other.data, (self, other))
        def backward():
            self.grad += out.grad           # d(a+b)/da = 1
            other.grad += out.grad          # d(a+b)/db = 1
        out._backward = backward
        return out

    def __mul__(self, other):
        out = Value(self.data * other.data, (self, other))
        def backward():
            self.grad += other.data * out.grad   # d(ab)/da = b
            other.grad += self.data * out.grad   # d(ab)/db = a
        out._backward = backward
        return out

    def tanh(self):
        y = math.tanh(self.data)
        out = Value(y, (self,))
        def backward():
            self.grad += (1 - y * y) * out.grad  # d tanh(a)/da = 1 - tanh(a)^2
        out._backward = backward
        return out

    def backward(self):
        order, seen = [], set()
        def visit(v):                            # depth-first: parents before children
            if id(v) not in seen:
                seen.add(id(v))
                for p in v.parents:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):                # children before parents
            v._backward()

a, b = Value(0.7), Value(-1.3)
y = (a * b + a).tanh()       # a is used twice: its gradient must accumulate (+=)
y.backward()
print(f"y = {y.data:.6f}, dy/da = {a.grad:.6f}, dy/db = {b.grad:.6f}")

# %% [markdown]
# Check against central differences, $f'(x) \approx (f(x+\varepsilon) - f(x-\varepsilon)) / 2\varepsilon$:

# %%
f = lambda a, b: math.tanh(a * b + a)
eps = 1e-6
print("numeric dy/da =", (f(0.7 + eps, -1.3) - f(0.7 - eps, -1.3)) / (2 * eps))
print("numeric dy/db =", (f(0.7, -1.3 + eps) - f(0.7, -1.3 - eps)) / (2 * eps))

# %% [markdown]
# ## The library's version: `Tensor` and `Function`
#
# tinyw2v2 does the same with arrays. A `Function` has a `forward` on raw NumPy/CuPy arrays that saves what
# its backward needs, and a `backward` that turns the upstream gradient into one gradient per input. Here is
# a complete op, written the way every op in `tinyw2v2/ops/` is written:

# %%
from tinyw2v2 import Function

class Square(Function):
    """y = x^2;  dx = 2 x g."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, g):
        (x,) = self.saved_tensors
        return 2 * x * g

x = tw.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
y = Square.apply(x).sum()
y.backward()
print("x.grad =", x.grad)

# %% [markdown]
# Calling a function records it as the creator (`_ctx`) of its output. The graph is the chain of creators;
# `Tensor.backward` orders it with an explicit stack (no recursion, so a chain of 10,000 ops is fine) and runs
# each backward once. After the pass each node's saved arrays are freed.

# %%
w = tw.tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
h = (x @ w).tanh()
loss = h.softmax(-1).log().sum()
print("graph, from the loss back to the leaves:")
for node in loss._topological_order():
    print("  ", type(node._ctx).__name__, node.shape)

# %% [markdown]
# The same graph drawn: each box is a `Function` the forward called (with the shape of what it returned), each
# ellipse a leaf (an input or a weight), and the arrows run in the forward direction. The walk is the engine's:
# from the loss, follow `_ctx.inputs` back to the leaves; a node's column is its distance from the leaves.
# `backward` visits the boxes right to left.

# %%
def draw_graph(root, names, ax):
    """Draw the graph that ends at ``root``; ``names`` maps id(leaf tensor) -> label."""
    column, edges, todo = {}, [], [root]
    while todo:                                    # collect every tensor and the edges input -> output
        t = todo.pop()
        if id(t) in column:
            continue
        column[id(t)] = t
        for inp in (t._ctx.inputs if t._ctx is not None else ()):
            if inp is not None:
                edges.append((inp, t))
                todo.append(inp)
    depth = {}

    def depth_of(t):                               # leaves 0, every op one more than its deepest input
        if id(t) not in depth:
            inputs = [i for i in (t._ctx.inputs if t._ctx is not None else ()) if i is not None]
            depth[id(t)] = 1 + max(map(depth_of, inputs)) if inputs else 0
        return depth[id(t)]

    rows, xy = {}, {}
    for t in column.values():
        d = depth_of(t)
        xy[id(t)] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    for a, b in edges:
        ax.annotate("", xy[id(b)], xy[id(a)], arrowprops=dict(arrowstyle="->", color="0.4",
                                                              shrinkA=22, shrinkB=22))
    for t in column.values():
        x, y = xy[id(t)]
        leaf = t._ctx is None
        label = names.get(id(t), "const") if leaf else f"{type(t._ctx).__name__}\n{tuple(t.shape)}"
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="ellipse" if leaf else "round", fc="#fce4d6" if leaf else "#dbe9f6", ec="0.3"))
    ax.set_xlim(-0.6, max(rows) + 0.6), ax.set_ylim(-0.7, max(rows.values()) - 0.3), ax.axis("off")


fig, ax = plt.subplots(figsize=(11, 2.2))
draw_graph(loss, {id(x): f"x {tuple(x.shape)}", id(w): f"w {tuple(w.shape)}"}, ax)
ax.set_title("loss = log(softmax(tanh(x @ w))).sum()", fontsize=10)
plt.show()

# %%
loss.backward()
print("w.grad =\n", w.grad)
print("saved arrays after backward:", h._ctx.saved_tensors)

# %% [markdown]
# ## Broadcasting, undone in one place
#
# If $b$ of shape (3, 1) is broadcast to (2, 3, 4) in $y = a + b$, each element of $b$ was used $2 \cdot 4$
# times, so its gradient is the upstream gradient summed over the axes it was stretched along. Ops return the
# gradient in the broadcast shape; the engine's `unbroadcast` reduces it, for every op, in one function.

# %%
from tinyw2v2.tensor import unbroadcast
a = tw.tensor(np.zeros((2, 3, 4)), requires_grad=True)
b = tw.tensor(np.zeros((3, 1)), requires_grad=True)
(a + b).sum().backward()
print("b.grad =", b.grad.ravel(), "(each entry was used 2*4 = 8 times)")
print(unbroadcast(np.ones((2, 3, 4)), (1, 4)))

# %% [markdown]
# ## `no_grad`
#
# Evaluation and parameter updates need no graph. Inside `tw.no_grad()` no function records its inputs or
# saves anything for backward.

# %%
with tw.no_grad():
    z = (x @ w).tanh()
print("requires_grad:", z.requires_grad, " creator:", z._ctx)

# %% [markdown]
# ## Gradient checking, and why float64
#
# Every hand-written backward in tinyw2v2 is checked against central differences. The error of a central
# difference has two parts: truncation, about $\varepsilon^2 |f'''|/6$, and rounding, about
# $u |f| / \varepsilon$ with $u$ the unit roundoff ($6\cdot10^{-8}$ in float32, $1.1\cdot10^{-16}$ in float64).
# The plot shows both for $f = \tanh$: float32 bottoms out at a few $10^{-6}$, and only for $\varepsilon$ between
# about $10^{-4}$ and $10^{-2}$; below that, rounding takes over (already $10^{-3}$ at $\varepsilon = 10^{-5}$).
# A backward that is wrong by one part in $10^5$ hides in that noise. float64 goes down to $10^{-11}$ and below
# for $\varepsilon$ around $10^{-6}$ to $10^{-5}$ (the checker uses $10^{-6}$), which leaves room to see such a mistake.

# %%
x0 = 0.4
exact = 1 - math.tanh(x0) ** 2
epsilons = np.logspace(-12, -1, 45)
plt.figure(figsize=(6, 3.5))
for dtype in (np.float32, np.float64):
    xs = dtype(x0)
    err = [abs(float((np.tanh(xs + dtype(e)) - np.tanh(xs - dtype(e))) / (2 * dtype(e))) - exact) + 1e-17
           for e in epsilons]
    plt.loglog(epsilons, err, label=np.dtype(dtype).name)
plt.xlabel("epsilon"); plt.ylabel("|numeric - exact|"); plt.title("central difference of tanh at 0.4")
plt.legend(); plt.grid(alpha=0.3); plt.tight_layout(); plt.show()

# %% [markdown]
# ## Why a random upstream gradient
#
# A tempting check is to backpropagate from `y.sum()`. For softmax that hides bugs: $\sum_i y_i = 1$, so the
# true gradient of `softmax(x).sum()` is zero, and so is the gradient of a *wrong* backward such as
# $y \odot (g - \text{mean}(g))$ (the right one is $y \odot (g - \sum_j g_j y_j)$) whenever $g$ is constant.
# `tw.gradcheck` therefore contracts the output with a seeded random $v$: it checks $\partial (v \cdot f)/\partial x$.

# %%
from tinyw2v2.ops.softmax import Softmax

class BuggySoftmax(Softmax):
    def backward(self, g):
        (y,) = self.saved_tensors
        return y * (g - g.mean(axis=self.axis, keepdims=True))   # wrong: should be sum(g * y)

x = tw.tensor(np.random.default_rng(1).standard_normal((2, 5)), requires_grad=True, dtype=tw.float64)
BuggySoftmax.apply(x, axis=-1).sum().backward()
print("with a plain sum the buggy gradient looks perfect:", np.abs(x.grad).max())

try:
    tw.gradcheck(lambda t: BuggySoftmax.apply(t, axis=-1), np.random.default_rng(1).standard_normal((2, 5)))
except tw.GradcheckError as e:
    print("gradcheck with a random upstream:\n ", e)
print("the real softmax passes:", tw.gradcheck(lambda t: t.softmax(-1), np.random.default_rng(1).standard_normal((2, 5))))

# %% [markdown]
# `tw.gradcheck` also runs along random directions for large inputs (`mode="fast"`), checks that a second
# backward gives the same result and that a zero upstream gives zero gradients. The whole catalogue of op checks
# runs with `tinyw2v2 check` (and in the tests, on every device):

# %%
from tinyw2v2.checks import run_all
import io
buf = io.StringIO()
run_all("cpu", families=["engine"], stream=buf)
print("\n".join(buf.getvalue().splitlines()[:8] + ["..."] + buf.getvalue().splitlines()[-1:]))

# %% [markdown]
# ## Try this
#
# - Add a `__pow__` to the scalar `Value` and check it with central differences.
# - Write a `Cube` function in the style of `Square`, then `tw.gradcheck(lambda t: Cube.apply(t), np.random.randn(3, 4))`.
#   Break its backward on purpose and read the error message.
# - Move a tensor to the emulated device with `x.to("emulated")`, then try `np.asarray(x.data)`: the error is
#   what CuPy would say on a GPU.

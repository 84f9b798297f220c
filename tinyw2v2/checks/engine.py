"""Gradient checks of the engine's core ops: three or more shape sets each, with broadcasting,
size-1 axes and non-contiguous (transposed) inputs. Inputs avoid kinks (|x| away from 0 for abs,
positive for log/sqrt, no ties for max)."""
import numpy as np

from .. import ops
from . import Case


def n(*shape):
    return lambda rng: rng.standard_normal(shape)


def pos(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def two(a, b, make_a=None, make_b=None):
    make_a, make_b = make_a or n, make_b or n
    return lambda rng: (make_a(*a)(rng), make_b(*b)(rng))


def away_from_zero(*shape):
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def distinct(*shape):
    """Values with no ties (a permutation of a spread range), so max has one winner."""
    return lambda rng: rng.permutation(np.linspace(-3, 3, int(np.prod(shape)))).reshape(shape)


def T(x):
    """Transposed view of the last two axes: a non-contiguous input."""
    return ops.swapaxes(x, -1, -2)


CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "engine", options))


for name, f, s in [("add", ops.add, "+"), ("sub", ops.sub, "-"), ("mul", ops.mul, "*")]:
    add(name, f"(3,4){s}(3,4)", f, two((3, 4), (3, 4)))
    add(name, f"(2,3,5){s}(5,) broadcast", f, two((2, 3, 5), (5,)))
    add(name, f"(4,1,3){s}(1,2,1) size-1", f, two((4, 1, 3), (1, 2, 1)))
    add(name, f"T(3,4){s}(4,3) transposed", lambda a, b, f=f: f(T(a), b), two((3, 4), (4, 3)))
add("div", "(3,4)/(3,4)", ops.div, two((3, 4), (3, 4), n, pos))
add("div", "(2,5)/(5,) broadcast", ops.div, two((2, 5), (5,), n, pos))
add("div", "scalar/(1,3,1)", lambda b: ops.div(2.5, b), lambda rng: (pos(1, 3, 1)(rng),))
add("div", "T(4,3)/(3,4) transposed", lambda a, b: ops.div(T(a), b), two((4, 3), (3, 4), n, pos))
add("neg", "(3,4)", ops.neg, lambda rng: (n(3, 4)(rng),))
add("neg", "(1,)", ops.neg, lambda rng: (n(1)(rng),))
add("neg", "T(5,2)", lambda a: ops.neg(T(a)), lambda rng: (n(5, 2)(rng),))

unary = [
    ("exp", ops.exp, n), ("log", ops.log, pos), ("sqrt", ops.sqrt, pos), ("tanh", ops.tanh, n),
    ("sigmoid", ops.sigmoid, n), ("abs", ops.abs, away_from_zero),
]
for name, f, make in unary:
    add(name, "(3,4)", f, lambda rng, make=make: (make(3, 4)(rng),))
    add(name, "(2,1,5) size-1", f, lambda rng, make=make: (make(2, 1, 5)(rng),))
    add(name, "T(4,3) transposed", lambda a, f=f: f(T(a)), lambda rng, make=make: (make(4, 3)(rng),))
for p in (2, 3, -1.5, 0.5):
    add("pow", f"(3,4)**{p}", lambda a, p=p: ops.pow(a, p), lambda rng: (pos(3, 4)(rng),))
add("pow", "T(2,3)**2", lambda a: ops.pow(T(a), 2), lambda rng: (n(2, 3)(rng),))
add("maximum", "(3,4),(3,4)", ops.maximum, lambda rng: (distinct(3, 4)(rng), distinct(3, 4)(rng) + 0.05))
add("maximum", "(2,3,4),(4,) broadcast", ops.maximum, lambda rng: (distinct(2, 3, 4)(rng), distinct(4)(rng) + 0.03))
add("maximum", "T(4,3),(1,4)", lambda a, b: ops.maximum(T(a), b), lambda rng: (distinct(4, 3)(rng), distinct(1, 4)(rng) + 0.01))
add("clip", "(3,4) [-0.5,0.5]", lambda a: ops.clip(a, -0.5, 0.5), lambda rng: (distinct(3, 4)(rng) + 0.013,))
add("clip", "(2,5) [0,inf)", lambda a: ops.clip(a, 0.0, None), lambda rng: (distinct(2, 5)(rng) + 0.017,))
add("clip", "T(5,3) (-inf,1]", lambda a: ops.clip(T(a), None, 1.0), lambda rng: (distinct(5, 3)(rng) + 0.011,))

add("matmul", "(3,4)@(4,5)", ops.matmul, two((3, 4), (4, 5)))
add("matmul", "(2,3,4)@(4,5) batch broadcast", ops.matmul, two((2, 3, 4), (4, 5)))
add("matmul", "(2,1,3,4)@(3,4,2) broadcast", ops.matmul, two((2, 1, 3, 4), (3, 4, 2)))
add("matmul", "(4,)@(4,3) vector", ops.matmul, two((4,), (4, 3)))
add("matmul", "(2,3,4)@(4,) vector", ops.matmul, two((2, 3, 4), (4,)))
add("matmul", "T(4,3)@T(5,4) transposed", lambda a, b: ops.matmul(T(a), T(b)), two((4, 3), (5, 4)))

for axis, keep in [(None, False), (1, False), ((0, 2), True), (-1, True)]:
    add("sum", f"(2,3,4) axis={axis} keepdims={keep}", lambda a, axis=axis, keep=keep: ops.sum(a, axis, keep),
        lambda rng: (n(2, 3, 4)(rng),))
    add("mean", f"(2,3,4) axis={axis} keepdims={keep}", lambda a, axis=axis, keep=keep: ops.mean(a, axis, keep),
        lambda rng: (n(2, 3, 4)(rng),))
    add("max", f"(2,3,4) axis={axis} keepdims={keep}", lambda a, axis=axis, keep=keep: ops.max(a, axis, keep),
        lambda rng: (distinct(2, 3, 4)(rng),))
    add("var", f"(2,3,4) axis={axis} keepdims={keep}", lambda a, axis=axis, keep=keep: ops.var(a, axis, keep),
        lambda rng: (n(2, 3, 4)(rng),))
add("sum", "T(3,5) axis=0", lambda a: ops.sum(T(a), 0), lambda rng: (n(3, 5)(rng),))
add("max", "T(3,5) axis=1", lambda a: ops.max(T(a), 1), lambda rng: (distinct(3, 5)(rng),))
add("max", "(2,4) exact ties split evenly", lambda a: ops.max(a, 1),  # central differences give 1/2 at a tie
    lambda rng: (np.array([[0.7, 0.7, -0.3, 0.1], [0.2, 0.6, 0.8, -0.4]]),))
add("var", "(1,7) ddof=1", lambda a: ops.var(a, 1, False, 1), lambda rng: (n(1, 7)(rng),))
add("var", "T(3,4) axis=1", lambda a: ops.var(T(a), 1), lambda rng: (n(3, 4)(rng),))

add("reshape", "(2,3,4)->(6,4)", lambda a: ops.reshape(a, (6, 4)), lambda rng: (n(2, 3, 4)(rng),))
add("reshape", "(5,)->(1,5,1)", lambda a: ops.reshape(a, (1, 5, 1)), lambda rng: (n(5)(rng),))
add("reshape", "T(3,4)->(12,)", lambda a: ops.reshape(T(a), (12,)), lambda rng: (n(3, 4)(rng),))
add("transpose", "(2,3,4) perm (2,0,1)", lambda a: ops.transpose(a, (2, 0, 1)), lambda rng: (n(2, 3, 4)(rng),))
add("transpose", "(3,4) reverse", lambda a: ops.transpose(a), lambda rng: (n(3, 4)(rng),))
add("transpose", "(1,2,1,3) perm (3,1,0,2)", lambda a: ops.transpose(a, (3, 1, 0, 2)), lambda rng: (n(1, 2, 1, 3)(rng),))

add("getitem", "(5,4)[1:4:2, ::-1]", lambda a: ops.getitem(a, (slice(1, 4, 2), slice(None, None, -1))),
    lambda rng: (n(5, 4)(rng),))
add("getitem", "(5,3)[[0,2,2,4,2]] repeated", lambda a, i: ops.getitem(a, i),
    lambda rng: (n(5, 3)(rng), np.array([0, 2, 2, 4, 2])))
add("getitem", "(3,4)[bool mask]", lambda a, m: ops.getitem(a, m),
    lambda rng: (n(3, 4)(rng), rng.random((3, 4)) > 0.4))
add("getitem", "(2,5,3)[:, [1,1,3], 0]", lambda a, i: ops.getitem(a, (slice(None), i, 0)),
    lambda rng: (n(2, 5, 3)(rng), np.array([1, 1, 3])))
add("getitem", "T(4,3)[1]", lambda a: ops.getitem(T(a), 1), lambda rng: (n(4, 3)(rng),))

add("concatenate", "(2,3),(4,3) axis 0", lambda a, b: ops.concatenate([a, b], 0), two((2, 3), (4, 3)))
add("concatenate", "(2,1,3),(2,2,3),(2,1,3) axis 1", lambda a, b, c: ops.concatenate([a, b, c], 1),
    lambda rng: (n(2, 1, 3)(rng), n(2, 2, 3)(rng), n(2, 1, 3)(rng)))
add("concatenate", "T(3,2),(3,5) axis -1", lambda a, b: ops.concatenate([T(a), b], -1), two((2, 3), (3, 5)))
add("stack", "2x(3,4) axis 0", lambda a, b: ops.stack([a, b], 0), two((3, 4), (3, 4)))
add("stack", "3x(2,) axis -1", lambda a, b, c: ops.stack([a, b, c], -1),
    lambda rng: (n(2)(rng), n(2)(rng), n(2)(rng)))
add("stack", "T(3,2),(2,3) axis 1", lambda a, b: ops.stack([T(a), b], 1), two((3, 2), (2, 3)))
add("pad", "(2,3) ((1,2),(0,1))", lambda a: ops.pad(a, ((1, 2), (0, 1))), lambda rng: (n(2, 3)(rng),))
add("pad", "(1,2,5) time (4,4) value -1", lambda a: ops.pad(a, ((0, 0), (0, 0), (4, 4)), -1.0),
    lambda rng: (n(1, 2, 5)(rng),))
add("pad", "T(3,2) 1", lambda a: ops.pad(T(a), 1), lambda rng: (n(3, 2)(rng),))

add("where", "(3,4) mask", lambda c, a, b: ops.where(c, a, b),
    lambda rng: (rng.random((3, 4)) > 0.5, n(3, 4)(rng), n(3, 4)(rng)))
add("where", "(2,3,4) mask (1,3,1) broadcast b (4,)", lambda c, a, b: ops.where(c, a, b),
    lambda rng: (rng.random((1, 3, 1)) > 0.5, n(2, 3, 4)(rng), n(4)(rng)))
add("where", "T(4,3) mask, scalar b", lambda c, a: ops.where(c, T(a), 0.5),
    lambda rng: (rng.random((3, 4)) > 0.5, n(4, 3)(rng)))
add("masked_fill", "(2,1,4) mask (2,3,1) broadcast", lambda a, m: ops.masked_fill(a, m, 0.0),
    lambda rng: (n(2, 1, 4)(rng), rng.random((2, 3, 1)) > 0.5))
add("masked_fill", "(3,5) -inf then softmax", lambda a, m: ops.softmax(ops.masked_fill(a, m, -np.inf), -1),
    lambda rng: (n(3, 5)(rng), np.array([[0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 0, 1]], bool)))
add("masked_fill", "T(4,3) value 2", lambda a, m: ops.masked_fill(T(a), m, 2.0),
    lambda rng: (n(4, 3)(rng), rng.random((3, 4)) > 0.5))

for name, f in [("softmax", ops.softmax), ("log_softmax", ops.log_softmax),
                ("logsumexp", lambda a, axis: ops.logsumexp(a, axis))]:
    add(name, "(3,5) axis -1", lambda a, f=f: f(a, -1), lambda rng: (n(3, 5)(rng),))
    add(name, "(2,4,3) axis 1 large values", lambda a, f=f: f(a, 1), lambda rng: (50 * n(2, 4, 3)(rng),))
    add(name, "(1,1) single", lambda a, f=f: f(a, -1), lambda rng: (n(1, 1)(rng),))
    add(name, "(3,4) with -inf and an all -inf row", lambda a, f=f: f(a, -1),
        lambda rng: (np.where(np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]], bool), -np.inf, n(3, 4)(rng)),))
    add(name, "T(5,3) axis 0", lambda a, f=f: f(T(a), 0), lambda rng: (n(5, 3)(rng),))
add("logsumexp", "(2,3,4) axis 2 keepdims", lambda a: ops.logsumexp(a, 2, True), lambda rng: (n(2, 3, 4)(rng),))

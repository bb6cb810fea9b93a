"""A scripted expert for PushT: greedy push planning on a private copy of the true simulator.

gym-pusht has no expert, so this one plans with the simulator itself. The space is fully damped (the block moves
only while it is pushed) and contacts are frictionless, so a push is fully described by where the round pusher
starts and where it is driven. At each decision the expert:

1. lists candidate pushes: a contact point on the T's outline (every ~20 px), the pre-push pose just outside it,
   a direction (the inward normal, +-30 degrees) and a length (4 to 80 px); plus pushes that continue from where
   the pusher already is;
2. simulates every candidate on a private gym-pusht space set to the current state (a few ms each) and scores
   the block's pose error to the goal (pixels + radians scaled to pixels) plus a small cost for the detour the
   pusher needs to reach the pre-push pose;
3. executes the best one: a collision-free approach around the T (a visibility graph over the T's outline
   inflated by the pusher radius), a short settle, then the exact command sequence it simulated.

Once the block covers more than 95% of the target (the env's success test), the pusher holds still.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from flexwm.envs.base import Observation, ScriptedPolicy

T_LOCAL = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)
AGENT_RADIUS = 15.0
ARENA = (22.0, 490.0)  # reachable range of the pusher centre (walls at 5 and 506, pusher radius 15)
ANGLE_SCALE = 45.0  # pixels of pose error per radian of angle error (coverage falls ~equally fast with both)


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def t_polygon(xy: np.ndarray, angle: float) -> np.ndarray:
    """World coordinates (8, 2) of the T outline for a block at pose (xy, angle)."""
    return T_LOCAL @ _rot(angle).T + np.asarray(xy, float)


def pose_error(xy, angle, goal) -> float:
    d_angle = (angle - goal[2] + math.pi) % (2 * math.pi) - math.pi
    return float(math.hypot(xy[0] - goal[0], xy[1] - goal[1]) + ANGLE_SCALE * abs(d_angle))


def coverage(xy, angle, goal) -> float:
    """Fraction of the goal T covered by the block T (the env's success measure)."""
    from shapely.geometry import Polygon

    block = Polygon(t_polygon(xy, angle)).buffer(0)
    target = Polygon(t_polygon(goal[:2], goal[2])).buffer(0)
    return float(block.intersection(target).area / target.area)


def _contact_points() -> list[tuple[np.ndarray, np.ndarray]]:
    """Points along the T outline (block frame) with their outward normals."""
    from shapely.geometry import Point, Polygon

    poly = Polygon(T_LOCAL)
    out = []
    n = len(T_LOCAL)
    for i in range(n):
        a, b = T_LOCAL[i], T_LOCAL[(i + 1) % n]
        edge = b - a
        length = float(np.linalg.norm(edge))
        normal = np.array([edge[1], -edge[0]]) / length
        mid = (a + b) / 2
        if poly.contains(Point(*(mid + normal))):
            normal = -normal
        k = max(1, int(round(length / 20)))
        for j in range(k):
            out.append((a + edge * (j + 0.5) / k, normal))
    return out


@dataclass
class _Plan:
    waypoints: list[np.ndarray]  # approach, ends at the pre-push pose
    pushes: list[np.ndarray]  # the simulated command sequence
    score: float
    predicted: float = 0.0


@dataclass
class _Sim:
    """A private gym-pusht space used to simulate candidate pushes."""

    env: object = field(default=None)

    def __post_init__(self) -> None:
        from flexwm.envs.pusht import _make_gym_env

        self.env = _make_gym_env("state", 96, 96)
        self.env.reset(seed=0)
        self.n_sub = int(1 / (self.env.dt * self.env.control_hz))

    def fresh(self) -> None:
        self.env._setup()

    def run(self, state: np.ndarray, agent_v: np.ndarray, targets: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """Set the space to `state` and apply the pusher targets; returns the final block (xy, angle)."""
        from pymunk.vec2d import Vec2d

        env = self.env
        block, agent = env.block, env.agent
        block.angle = float(state[4])  # angle first: setting it rotates about the centre of gravity
        block.position = (float(state[2]), float(state[3]))
        block.velocity = (0.0, 0.0)
        block.angular_velocity = 0.0
        agent.position = (float(state[0]), float(state[1]))
        agent.velocity = (float(agent_v[0]), float(agent_v[1]))
        kp, kv, dt = env.k_p, env.k_v, env.dt
        for t in targets:
            target = Vec2d(float(t[0]), float(t[1]))
            for _ in range(self.n_sub):
                agent.velocity += (kp * (target - agent.position) - kv * agent.velocity) * dt
                env.space.step(dt)
        return np.array(block.position, float), float(block.angle)


class PushTExpert(ScriptedPolicy):
    """Greedy simulate-and-push planner for PushT (reads the privileged state; deterministic)."""

    def __init__(self, push_lengths: tuple[float, ...] = (4.0, 12.0, 30.0, 60.0),
                 push_angles_deg: tuple[float, ...] = (-30.0, 0.0, 30.0), step_px: float = 25.0,
                 detour_cost: float = 0.03, max_plan_steps: int = 60, seed: int = 0) -> None:
        self.push_lengths = push_lengths
        self.push_angles = [math.radians(a) for a in push_angles_deg]
        self.step_px = step_px
        self.detour_cost = detour_cost
        self.max_plan_steps = max_plan_steps
        self.seed = int(seed)
        self._contacts = _contact_points()
        self._sim: _Sim | None = None
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self.seed, int(seed)])
        self._plan: _Plan | None = None
        self._settle = 0
        self._age = 0
        self.decisions = 0

    # ---- acting ------------------------------------------------------------------------------------------

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, np.float64)
        agent, block_xy, angle, goal, vel = state[0:2], state[2:4], state[4], state[5:8], state[8:10]
        if coverage(block_xy, angle, goal) > 0.95:
            self._plan = None
            return agent.astype(np.float32)  # done: hold still
        if self._plan is not None and self._age > self.max_plan_steps:
            self._plan = None  # blocked on the way (a wall, the T moved): plan again from here
        if self._plan is None:
            self._plan = self._decide(state)
            self._settle = 0
            self._age = 0
        self._age += 1
        plan = self._plan
        if plan.waypoints:
            wp = plan.waypoints[0]
            last = len(plan.waypoints) == 1
            dist = float(np.linalg.norm(agent - wp))
            if last:  # the pre-push pose: arrive and (nearly) stop, so the push runs as simulated
                if (dist < 1.5 and np.linalg.norm(vel) < 20.0) or self._settle >= 6:
                    plan.waypoints.pop(0)
                else:
                    self._settle += dist < 6.0
                    return wp.astype(np.float32)
            elif dist < 8.0:
                plan.waypoints.pop(0)
                return self.act(obs, state)
            else:
                return wp.astype(np.float32)
        if plan.pushes:
            return plan.pushes.pop(0).astype(np.float32)
        self._plan = None
        return self.act(obs, state)

    # ---- planning ----------------------------------------------------------------------------------------

    def _push_targets(self, start: np.ndarray, direction: np.ndarray, length: float) -> list[np.ndarray]:
        n = max(1, math.ceil(length / self.step_px))
        targets = [start + direction * length * (k + 1) / n for k in range(n)]
        return targets + [targets[-1]] * 2  # hold: let the pusher catch up with its last target

    def _decide(self, state: np.ndarray) -> _Plan:
        from shapely.geometry import Polygon

        if self._sim is None:
            self._sim = _Sim()
        sim = self._sim
        sim.fresh()
        self.decisions += 1
        agent, block_xy, angle, goal, vel = state[0:2], state[2:4], float(state[4]), state[5:8], state[8:10]
        current = pose_error(block_xy, angle, goal)
        poly = Polygon(t_polygon(block_xy, angle))
        graph = _Visibility(poly, agent)
        rot = _rot(angle)
        candidates: list[_Plan] = []

        def consider(waypoints, start, start_v, detour, direction):
            for length in self.push_lengths:
                pushes = self._push_targets(start, direction, length)
                xy, a = sim.run(np.array([*start, *block_xy, angle]), start_v, pushes)
                err = pose_error(xy, a, goal)
                candidates.append(_Plan([w.copy() for w in waypoints], [p.copy() for p in pushes],
                                        err + self.detour_cost * detour, err))

        # pushes from a pre-push pose next to each contact point
        for p_local, n_local in self._contacts:
            p = rot @ p_local + block_xy
            n = rot @ n_local
            pre = p + n * (AGENT_RADIUS + 2.0)
            if not (ARENA[0] <= pre[0] <= ARENA[1] and ARENA[0] <= pre[1] <= ARENA[1]):
                continue
            if poly.distance(_point(pre)) < AGENT_RADIUS + 1.0:
                continue  # in a concave corner: the pusher does not fit
            path = graph.path_to(p + n * (AGENT_RADIUS + 9.0))
            if path is None:
                continue
            waypoints = path + [pre]
            detour = _length([agent, *waypoints])
            for da in self.push_angles:
                consider(waypoints, pre, np.zeros(2), detour, _rot(da) @ -n)
        # pushes that continue from where the pusher is now
        if poly.distance(_point(agent)) < AGENT_RADIUS + 4.0:
            for k in range(16):
                th = 2 * math.pi * k / 16
                consider([], agent, vel, 0.0, np.array([math.cos(th), math.sin(th)]))

        if not candidates:  # nowhere to push from (should not happen): move towards the arena centre
            return _Plan([np.array([256.0, 256.0])], [], current)
        best = min(candidates, key=lambda c: c.score)
        if best.predicted >= current - 0.05:  # greedy is stuck: explore one of the better pushes
            ranked = sorted(candidates, key=lambda c: c.predicted)[:12]
            best = ranked[int(self._rng.integers(len(ranked)))]
        return best


def _point(xy):
    from shapely.geometry import Point

    return Point(float(xy[0]), float(xy[1]))


def _length(points) -> float:
    return float(sum(np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:])))


class _Visibility:
    """Shortest collision-free pusher paths around the T: a visibility graph over its inflated outline."""

    def __init__(self, poly, start: np.ndarray) -> None:
        from shapely.geometry import JOIN_STYLE, Point

        self.obstacle = poly.buffer(AGENT_RADIUS + 3.0)
        nodes = [np.array(c) for c in poly.buffer(AGENT_RADIUS + 10.0, join_style=JOIN_STYLE.mitre,
                                                  mitre_limit=3.0).exterior.coords[:-1]]
        self.nodes = [n for n in nodes if ARENA[0] <= n[0] <= ARENA[1] and ARENA[0] <= n[1] <= ARENA[1]]
        # first leave the T's neighbourhood, straight away from its nearest point
        self.prefix: list[np.ndarray] = []
        start = np.asarray(start, float)
        if self.obstacle.contains(Point(*start)):
            near = np.array(poly.exterior.interpolate(poly.exterior.project(Point(*start))).coords[0])
            away = start - near
            norm = float(np.linalg.norm(away))
            away = away / norm if norm > 1e-6 else np.array([0.0, -1.0])
            start = np.clip(near + away * (AGENT_RADIUS + 10.0), *ARENA)
            self.prefix = [start]
        self.start = start
        k = len(self.nodes)
        self.adj = [[self._clear(self.nodes[i], self.nodes[j]) for j in range(k)] for i in range(k)]
        self.from_start = [self._clear(start, n) for n in self.nodes]

    def _clear(self, a: np.ndarray, b: np.ndarray) -> bool:
        from shapely.geometry import LineString

        if np.allclose(a, b):
            return True
        return not LineString([tuple(a), tuple(b)]).intersects(self.obstacle)

    def path_to(self, goal: np.ndarray) -> list[np.ndarray] | None:
        """Waypoints from the start to `goal` (excluding the start), or None if there is no path."""
        if self._clear(self.start, goal):
            return [*self.prefix, goal]
        k = len(self.nodes)
        to_goal = [self._clear(n, goal) for n in self.nodes]
        dist = [math.inf] * k
        prev = [-1] * k
        heap = []
        for i in range(k):
            if self.from_start[i]:
                dist[i] = float(np.linalg.norm(self.nodes[i] - self.start))
                heapq.heappush(heap, (dist[i], i))
        best, best_i = math.inf, -1
        while heap:
            d, i = heapq.heappop(heap)
            if d > dist[i]:
                continue
            if to_goal[i]:
                total = d + float(np.linalg.norm(goal - self.nodes[i]))
                if total < best:
                    best, best_i = total, i
            for j in range(k):
                if self.adj[i][j] and j != i:
                    nd = d + float(np.linalg.norm(self.nodes[j] - self.nodes[i]))
                    if nd < dist[j]:
                        dist[j], prev[j] = nd, i
                        heapq.heappush(heap, (nd, j))
        if best_i < 0:
            return None
        chain = []
        i = best_i
        while i >= 0:
            chain.append(self.nodes[i].copy())
            i = prev[i]
        return [*self.prefix, *chain[::-1], goal]

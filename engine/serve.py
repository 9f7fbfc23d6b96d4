"""The engine as a Ray Serve application: one deployment per task family, behind the Gradio front.

    python -m engine.serve [--address auto|HOST:6379] [--replicas N] [--style-replicas N] [--translate-replicas N]
                           [--correspondence-replicas N] [--num-gpus 0.5] [--num-cpus 1] [--max-batch-size 8]
                           [--batch-wait-ms 10] [--weights-dir DIR] [--device cuda] [--offline] [--random-weights]
    python app.py --engine ray            # the Gradio front, on a machine of the same Ray cluster

Application ``gan-studio`` (see docs/SCALE_OUT.md):

* ``Style`` — AdaIN / Magenta (engine.pipelines.style.pipeline_for): ``run`` for one image, ``frame`` for one
  video/webcam frame with the stream's state passed in and returned (any replica can take any frame);
* ``Translate`` — CycleGAN / CUT / GAN Compression: ``image`` is a ``@serve.batch`` method, so single-image
  requests of one model arriving together (several users, or webcam frames) run as one batch of equal-sized images
  (padding and cropping as in engine.pipelines.translate; on this CPU a batch gives bit-identical outputs to one
  image at a time); ``frames`` takes one batch of video frames;
* ``Correspondence`` — match / similarity / propagate / congeal, and ``stream_frame`` for propagation streams,
  whose state stays on the replica the stream's frames are routed to (multiplexed by stream id);
* ``Engine`` — the ingress: ``info()`` (replicas, settings) for the client.

Every replica is one process with its own engine (model cache, device, engine lock); weights are resolved there by
the same manifest rules as in the app (``WEIGHTS_DIR``, ``weights/``, the download cache), from the settings
forwarded below. ``num_gpus`` may be fractional (several replicas sharing one GPU). Replies are
``("ok", value)`` or ``("error", class name, message)`` so engine errors reach the user as the same short message.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ray import serve  # this module is the Ray side; nothing else in the engine imports it

from .client import APP_NAME

log = logging.getLogger("gan-studio.serve")

STREAMS_PER_REPLICA = 16   # propagation streams kept per replica (the least recently used is dropped)
FORWARDED_ENV = ("WEIGHTS_DIR", "DATA_DIR", "ENGINE_DEVICE", "ENGINE_OFFLINE", "ENGINE_CACHE_DIR", "ENGINE_MAX_PIXELS",
                 "ENGINE_THREADS", "ENGINE_RANDOM_WEIGHTS", "ENGINE_CPU_BF16", "HF_HUB_OFFLINE")


@dataclass
class ServeConfig:
    replicas: dict = field(default_factory=lambda: {"style": 1, "translate": 1, "correspondence": 1})
    num_cpus: float = 1.0           # per replica (Ray's scheduling unit; torch's threads: ENGINE_THREADS)
    num_gpus: float = 0.0           # per replica; fractional shares one GPU between replicas
    max_batch_size: int = 8         # Translate.image
    batch_wait_ms: float = 10.0
    max_ongoing_requests: int = 8
    env: dict = field(default_factory=dict)


def forwarded_env() -> dict:
    """The engine settings of this process that every replica gets (so weights resolve the same way there)."""
    from .config import REPO_ROOT

    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def guard(fn, *args, **kwargs):
    """Run engine work; engine errors become ("error", class, message), anything else ("internal", class)."""
    from .device import is_oom
    from .errors import EngineError

    try:
        return ("ok", fn(*args, **kwargs))
    except EngineError as exc:
        return ("error", type(exc).__name__, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the client without a traceback or server paths
        if is_oom(exc):
            return ("error", "ModelError", "Out of memory while running the model. Lower the max-side setting "
                                           "or use fewer images.")
        log.error("engine request failed:\n%s", traceback.format_exc())
        return ("internal", type(exc).__name__, "")


class _Replica:
    """Common part: environment, a thread for blocking engine work (the event loop stays free), pid for tests."""

    def __init__(self, env: dict | None = None):
        os.environ.update(env or {})
        logging.basicConfig(level=logging.INFO)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine")

    async def _work(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: guard(fn, *args, **kwargs))

    async def pid(self):
        return ("ok", os.getpid())


class StyleReplica(_Replica):
    async def run(self, model, content, styles, settings: dict):
        from .pipelines.style import pipeline_for

        return await self._work(lambda: pipeline_for(model).run(content, styles, **settings))

    async def frame(self, model, frame, styles, state, settings: dict):
        from .pipelines.style import pipeline_for

        return await self._work(lambda: pipeline_for(model).stylize_frame(frame, styles, state, **settings))


class TranslateReplica(_Replica):
    def __init__(self, env: dict | None = None, max_batch_size: int = 8, batch_wait_ms: float = 10.0):
        super().__init__(env)
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)
        self.batches: list[int] = []   # sizes of the batches run (diagnostics: were requests batched?)

    @staticmethod
    def _translate_group(model: str, images: list, precision: str, uint8: str = "round",
                         with_maps: bool = False) -> list:
        """Equal-sized images of one model in one generator call -> ((H, W, 3) uint8, {name: (H, W) map}) each."""
        import torch

        from . import imageio, registry
        from .pipelines.translate import _check_model_name, check_precision, check_uint8, run_generator
        from .queue import run_exclusive

        _check_model_name(model)
        precision, uint8 = check_precision(precision), check_uint8(uint8)

        def job():
            net = registry.load_model(model)
            x = torch.cat([imageio.pil_to_tensor(im) for im in images])
            y, maps = (run_generator(net, x, precision=precision, with_maps=True) if with_maps
                       else (run_generator(net, x, precision=precision), {}))
            return [(imageio.tensor_to_numpy(y[i:i + 1], uint8), {k: m[i].numpy() for k, m in maps.items()})
                    for i in range(len(images))]

        return run_exclusive(job)

    def _run_batch(self, requests: list) -> list:
        groups: dict = {}
        for i, (model, img, precision, uint8, with_maps) in enumerate(requests):
            groups.setdefault((model, img.shape, precision, uint8, bool(with_maps)), []).append(i)
        replies: list = [None] * len(requests)
        for (model, _shape, precision, uint8, with_maps), idx in groups.items():
            reply = guard(self._translate_group, model, [requests[i][1] for i in idx], precision, uint8, with_maps)
            self.batches.append(len(idx))
            for k, i in enumerate(idx):
                replies[i] = ("ok", reply[1][k]) if reply[0] == "ok" else reply
        return replies

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list) -> list:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_batch, requests)

    async def image(self, model: str, img, precision: str = "fp32", uint8: str = "round", with_maps: bool = False):
        """One image: (H, W, 3) uint8 -> ("ok", (output (H, W, 3) uint8, {name: (H, W) map})) or an error reply.
        Requests arriving together are batched (``_batched``): those of one model, size and setting run as one
        generator call."""
        return await self._batched((model, img, precision, uint8, with_maps))

    async def frames(self, model, frames: list, precision: str = "fp32"):
        """One batch of video frames (equal sizes) -> (N, H, W, 3) uint8, as engine.pipelines.translate_video."""
        def job():
            import torch

            from . import imageio, registry
            from .pipelines.translate import _check_model_name, check_precision, run_generator
            from .queue import run_exclusive

            _check_model_name(model)
            mode = check_precision(precision)

            def run():
                net = registry.load_model(model)
                y = run_generator(net, torch.cat([imageio.pil_to_tensor(f) for f in frames]), precision=mode)
                return y.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

            return run_exclusive(run)

        return await self._work(job)

    async def batch_sizes(self):
        return ("ok", list(self.batches))


class CorrespondenceReplica(_Replica):

    @staticmethod
    def _backend(name):
        from .correspondence import get_backend

        return get_backend(name)

    async def match(self, backend, a, b):
        return await self._work(lambda: self._backend(backend).match(a, b))

    async def similarity(self, backend, a, b, x, y):
        def job():
            fn = getattr(self._backend(backend), "similarity", None)
            return None if fn is None else fn(a, b, x, y)

        return await self._work(job)

    async def propagate(self, backend, edit, targets, reference, opacity):
        return await self._work(lambda: self._backend(backend).propagate(edit, targets, reference=reference,
                                                                         opacity=opacity))

    async def congeal(self, model, image, resolution, flip):
        from .pipelines import gangealing as G

        return await self._work(lambda: G.congeal_image(model, image, resolution=resolution, flip=flip))

    @staticmethod
    def _make_stream(spec: dict):
        return CorrespondenceReplica._backend(spec["backend"]).stream(
            spec["edit"], reference=spec["reference"], opacity=spec["opacity"], **spec["options"])

    async def check_stream(self, spec: dict):
        return await self._work(lambda: (self._make_stream(spec), None)[1])

    @serve.multiplexed(max_num_models_per_replica=STREAMS_PER_REPLICA)
    async def stream_session(self, stream_id: str) -> dict:
        """The holder of one propagation stream on this replica (filled on its first frame)."""
        return {}

    async def stream_frame(self, stream_id: str, frame, spec):
        holder = await self.stream_session(serve.get_multiplexed_model_id() or stream_id)
        if "stream" not in holder:
            if spec is None:
                return ("need_spec",)
            made = await self._work(self._make_stream, spec)
            if made[0] != "ok":
                return made
            holder["stream"] = made[1]
        return await self._work(holder["stream"], frame)


class EngineIngress:
    """The application's ingress: holds the three deployments and says how the application is set up."""

    def __init__(self, style, translate, correspondence, config: dict):
        self.config = config

    async def info(self):
        return {"app": APP_NAME, "replicas": dict(self.config["replicas"]), "num_gpus": self.config["num_gpus"],
                "num_cpus": self.config["num_cpus"], "max_batch_size": self.config["max_batch_size"],
                "pid": os.getpid()}


def build_app(config: ServeConfig | None = None):
    """The bound Serve application (pass it to ``serve.run(app, name=APP_NAME)``)."""
    config = config or ServeConfig()
    env = {**forwarded_env(), **config.env}

    def options(family: str) -> dict:
        return {"name": {"style": "Style", "translate": "Translate", "correspondence": "Correspondence"}[family],
                "num_replicas": int(config.replicas[family]),
                "max_ongoing_requests": config.max_ongoing_requests,
                "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus,
                                      "runtime_env": {"env_vars": env}},
                "health_check_period_s": 2, "health_check_timeout_s": 30, "graceful_shutdown_timeout_s": 2}

    style = serve.deployment(StyleReplica).options(**options("style")).bind(env)
    translate = serve.deployment(TranslateReplica).options(**options("translate")).bind(
        env, config.max_batch_size, config.batch_wait_ms)
    corr = serve.deployment(CorrespondenceReplica).options(**options("correspondence")).bind(env)
    ingress = serve.deployment(EngineIngress).options(
        name="Engine", num_replicas=1, ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": env}})
    return ingress.bind(style, translate, corr, asdict(config))


def start(config: ServeConfig | None = None, *, blocking: bool = False):
    """Deploy the application on the Ray instance this process is connected to; returns the ingress handle."""
    return serve.run(build_app(config), name=APP_NAME, route_prefix=None, blocking=blocking)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.serve", description=__doc__.splitlines()[0])
    p.add_argument("--address", help="Ray cluster to deploy on (auto, HOST:6379, ray://HOST:10001); "
                                     "default: start a local Ray instance and keep serving until Ctrl-C")
    p.add_argument("--replicas", type=int, default=1, help="replicas of every deployment (default 1)")
    for fam in ("style", "translate", "correspondence"):
        p.add_argument(f"--{fam}-replicas", type=int, help=f"replicas of the {fam} deployment (overrides --replicas)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica (default 1)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica, fractional allowed (default 0)")
    p.add_argument("--max-batch-size", type=int, default=8, help="Translate: largest batch of single images")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="Translate: how long a batch waits to fill")
    p.add_argument("--weights-dir", action="append", default=[], help="checkpoint folder on the replicas' nodes")
    p.add_argument("--device", help="device on each replica (default: its best available: the GPU Ray gave it)")
    p.add_argument("--offline", action="store_true", help="replicas never download weights")
    p.add_argument("--random-weights", action="store_true", help="smoke-test mode: random weights everywhere")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (only without --address)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    env = {}
    if args.weights_dir:
        env["WEIGHTS_DIR"] = os.pathsep.join(args.weights_dir)
    if args.device:
        env["ENGINE_DEVICE"] = args.device
    if args.offline:
        env["ENGINE_OFFLINE"] = "1"
    if args.random_weights:
        env["ENGINE_RANDOM_WEIGHTS"] = "1"
    replicas = {fam: getattr(args, f"{fam}_replicas") or args.replicas
                for fam in ("style", "translate", "correspondence")}
    if min(replicas.values()) < 1 or args.num_gpus < 0 or args.num_cpus < 0 or args.max_batch_size < 1:
        raise SystemExit("replicas and the batch size must be >= 1; CPUs and GPUs >= 0")
    return ServeConfig(replicas=replicas, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                       max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms, env=env)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    import ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    start(config)
    print(f"{APP_NAME}: Style ×{config.replicas['style']}, Translate ×{config.replicas['translate']}, "
          f"Correspondence ×{config.replicas['correspondence']} on Ray {ray.get_runtime_context().gcs_address}; "
          "front: python app.py --engine ray", flush=True)
    if args.address:
        return 0   # the application lives on in the cluster (serve shutdown / serve status to manage it)
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

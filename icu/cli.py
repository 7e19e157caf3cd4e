"""The `icu` command: one subcommand per service.

Every flag falls back to an ``ICU_*`` environment variable (named in ``--help``); flags win.
Subcommands import their service lazily so ``icu --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from icu import __version__
from icu.cli_common import add_kafka_flags as _add_kafka_flags
from icu.cli_common import env_help as _env
from icu.settings import ConfigError, configure_logging, load_settings
from infra.settings import DatabaseAdminSettings, TopicsAdminSettings, UpSettings
from ingest import IngestError
from research import ResearchError
from simulator.errors import SimulatorError

log = logging.getLogger("icu")

Handler = Callable[[argparse.Namespace], int]


def _add_database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", dest="database_url", help=_env("PostgreSQL URL", "ICU_DATABASE_URL"))
    parser.add_argument(
        "--timeseries",
        dest="database_timeseries",
        choices=["auto", "timescale", "plain"],
        help=_env("time-series storage", "ICU_DATABASE_TIMESERIES", "auto"),
    )


# --- handlers ------------------------------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    from icu.kafka import GracefulStop
    from infra.up import run_up

    settings = load_settings(
        UpSettings,
        broker_port=args.broker_port,
        postgres_port=args.postgres_port,
        state_dir=args.state_dir,
        topic_prefix=args.topic_prefix,
        database_url=args.database_url,
        database_timeseries=args.database_timeseries,
    )
    configure_logging(settings.log_level)
    return run_up(settings, GracefulStop().install())


def _topic_settings(args: argparse.Namespace) -> TopicsAdminSettings:
    return load_settings(
        TopicsAdminSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        topic_partitions=getattr(args, "partitions", None),
    )


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from infra.topics import create_topics

    settings = _topic_settings(args)
    configure_logging(settings.log_level)
    for report in create_topics(settings):
        state = "created" if report.created else "exists"
        print(f"{report.name}\t{report.partitions} partitions\t{state}")
    return 0


def _cmd_topics_list(args: argparse.Namespace) -> int:
    from infra.topics import list_topics

    settings = _topic_settings(args)
    configure_logging(settings.log_level)
    topics = list_topics(settings, all_topics=args.all)
    if not topics:
        print(f"no topics with prefix '{settings.topic_prefix}.' (run `icu topics create`)", file=sys.stderr)
        return 1
    for name, partitions in topics.items():
        print(f"{name}\t{partitions} partitions")
    return 0


def _database_settings(args: argparse.Namespace) -> DatabaseAdminSettings:
    return load_settings(
        DatabaseAdminSettings, database_url=args.database_url, database_timeseries=args.database_timeseries
    )


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    from infra.db.migrate import migrate

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    # Schema only: retention (which drops old partitions) runs in `icu db maintain` / `icu up`.
    report = migrate(settings.require_database_url(), preference=settings.database_timeseries)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in report.applied) or "none pending"
    print(f"schema version {report.current_version} ({report.backend}); applied: {names}")
    return 0


def _cmd_db_maintain(args: argparse.Namespace) -> int:
    from infra.db.maintenance import prepare_database

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    _, report = prepare_database(
        settings.require_database_url(),
        preference=settings.database_timeseries,
        retention_days=settings.database_retention_days,
    )
    print(
        f"partitions created: {len(report.created)}, dropped: {len(report.dropped)}, "
        f"rows moved from default partitions: {report.rows_moved}"
    )
    return 0


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from icu.contracts import dump_schema, json_schemas

    out: Path = args.out
    schemas = {name: dump_schema(schema) for name, schema in json_schemas().items()}
    if args.check:
        stale = [
            name for name, text in schemas.items() if not (out / name).is_file() or (out / name).read_text() != text
        ]
        extra = sorted(p.name for p in out.glob("*.schema.json") if p.name not in schemas) if out.is_dir() else []
        if stale or extra:
            print(
                f"schemas in {out} are out of date: {', '.join(stale + extra)}; run `icu schemas export`",
                file=sys.stderr,
            )
            return 1
        print(f"{len(schemas)} schemas in {out} are current")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schemas.items():
        (out / name).write_text(text)
    print(f"wrote {len(schemas)} schemas to {out}")
    return 0


def _cmd_bench_db(args: argparse.Namespace) -> int:
    from infra.bench import bench_db

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    result = bench_db(settings.require_database_url(), rows=args.rows, batch=args.batch, repeats=args.repeats)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_bench_broker(args: argparse.Namespace) -> int:
    from infra.bench import bench_broker

    configure_logging("WARNING")
    print(json.dumps(bench_broker(repeats=args.repeats), indent=2))
    return 0


def _cmd_bench_all(args: argparse.Namespace) -> int:
    from infra.bench_all import STAGES, bench_all

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    unknown = [s for s in stages or [] if s not in STAGES]
    if unknown or stages == []:
        raise ConfigError(f"--stages: unknown {', '.join(unknown) or '(none given)'}; choose from {','.join(STAGES)}")
    settings = load_settings(DatabaseAdminSettings, database_url=args.database_url)
    configure_logging("WARNING")
    url = settings.database_url.get_secret_value() if settings.database_url else None

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = bench_all(quick=args.quick, stages=stages, database_url=url, weights=args.weights, device=args.device,
                       progress=progress)  # fmt: skip
    table = result["table"]
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    print(table, end="")
    failed = [name for name, stage in result["stages"].items() if "error" in stage]
    if failed:
        print(f"icu bench all: failed stages: {', '.join(failed)} (see the table and the log above)", file=sys.stderr)
    return 1 if failed else 0


# --- simulator ------------------------------------------------------------------------------


def _size_flag(value: str) -> tuple[int, int]:
    from simulator.settings import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise SimulatorError(f"--size: {exc}") from None


def _scenarios(names: Sequence[str]) -> list[Any]:
    from simulator.scenario import load_scenario

    return [load_scenario(name) for name in names]


def _cmd_sim_scenarios(args: argparse.Namespace) -> int:
    from simulator.scenario import library_names, load_scenario

    for name in library_names():
        scenario = load_scenario(name)
        kinds = ", ".join(sorted({e.kind for e in scenario.episodes})) or "none"
        print(f"{name}\t{scenario.duration_s / 60:g} min\tepisodes: {kinds}\t{scenario.description}")
    return 0


def _cmd_sim_validate(args: argparse.Namespace) -> int:
    from simulator.scenario import ScenarioError, load_scenario_file

    failed = 0
    for path in args.files:
        try:
            scenario = load_scenario_file(path)
        except ScenarioError as exc:
            failed += 1
            print(exc, file=sys.stderr)
        else:
            print(f"{path}: ok ({scenario.name}, {scenario.duration_s:g} s, {len(scenario.episodes)} episodes)")
    return 2 if failed else 0


def _cmd_sim_clips(args: argparse.Namespace) -> int:
    import time

    from simulator.clips import plan_clip_set, write_clip_set

    configure_logging("INFO")
    width, height = _size_flag(args.size)
    specs = plan_clip_set(
        n=args.n,
        seed=args.seed,
        split=args.split,
        duration_s=args.duration,
        fps=args.fps,
        width=width,
        height=height,
        scenarios=_scenarios(args.scenario or []),
    )
    start = time.monotonic()
    for done, path in enumerate(write_clip_set(specs, args.out, workers=args.workers), start=1):
        elapsed = time.monotonic() - start
        print(f"[{done}/{len(specs)}] {path.with_suffix('.mp4').name}  ({elapsed:.1f} s)", file=sys.stderr)
    print(f"wrote {len(specs)} clips ({args.split}, seed {args.seed}) to {args.out}")
    return 0


def _cmd_sim_ward(args: argparse.Namespace) -> int:
    from icu.contracts import Topic
    from icu.kafka import GracefulStop, create_renewing_producer
    from infra.topics import require_topics
    from simulator.settings import SimWardSettings
    from simulator.ward import DEFAULT_MIX, Ward, open_truth

    settings = load_settings(
        SimWardSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        sim_beds=args.beds,
        sim_speed=args.speed,
        sim_fps=args.fps,
        sim_size=args.size,
        sim_seed=args.seed,
    )
    configure_logging(settings.log_level)
    scenarios = _scenarios(args.scenario or DEFAULT_MIX)
    # Also the reachability check: an unreachable broker fails here as one line.
    require_topics(settings, [Topic.FRAMES, Topic.VITALS])
    stop = GracefulStop().install()
    producer = create_renewing_producer(settings, name="simulated ward", max_block_ms=5_000)
    truth = open_truth(args.truth)
    try:
        ward = Ward(settings, scenarios, truth_out=truth)
        log.info(
            "simulated ward: %d beds at %gx speed, %g fps %s -> %s.frames / %s.vitals (Ctrl-C stops)",
            settings.sim_beds, settings.sim_speed, settings.sim_fps, settings.sim_size,
            settings.topic_prefix, settings.topic_prefix,
        )  # fmt: skip
        stats = ward.run(producer, stop, duration_s=args.duration)
    finally:
        producer.close(timeout=30)
        if truth is not None:
            truth.close()
    print(json.dumps({bed.bed_id: vars(s) for bed, s in zip(ward.beds, stats, strict=True)}))
    return 0


def _cmd_sim_vitals(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from icu.contracts import encode
    from simulator.bed import monitor_readings

    (scenario,) = _scenarios([args.scenario])
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC).replace(microsecond=0)
    if start.tzinfo is None:
        raise SimulatorError(f"--start {args.start!r} needs a timezone, e.g. 2026-01-01T00:00:00+00:00")
    for vitals in monitor_readings(scenario, seed=args.seed, bed_id=args.bed, start=start):
        sys.stdout.write(encode(vitals).decode() + "\n")
    return 0


def _cmd_sim_camera(args: argparse.Namespace) -> int:
    import asyncio

    from simulator.camera import run_camera
    from simulator.settings import SimCameraSettings

    settings = load_settings(SimCameraSettings)
    configure_logging(settings.log_level)
    if settings.sim_whip_token is None:
        raise ConfigError("ICU_SIM_WHIP_TOKEN is not set: the WHIP endpoint needs the bed's bearer token")
    (scenario,) = _scenarios([args.scenario])
    stats = asyncio.run(
        run_camera(
            args.whip,
            settings.sim_whip_token.get_secret_value(),
            scenario,
            seed=args.seed,
            fps=args.fps,
            duration_s=args.duration,
            ice_addresses=tuple(args.ice_address or ()),
        )
    )
    print(json.dumps(stats))
    return 0


def _cmd_sim_sheet(args: argparse.Namespace) -> int:
    from simulator.sheet import contact_sheet

    if not 0.1 <= args.scale <= 1.0:
        raise SimulatorError(f"--scale must be within 0.1-1, got {args.scale:g}")
    print(f"wrote {contact_sheet(args.out, scale=args.scale)}")
    return 0


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from simulator.bench import bench_render

    width, height = _size_flag(args.size)
    print(json.dumps(bench_render(frames=args.frames, repeats=args.repeats, width=width, height=height), indent=2))
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    import functools

    from faust.worker import Worker

    from alerts.app import INPUTS, AlertSettings, build_app, use_event_loop
    from icu.contracts import Topic
    from infra.observability import by_label, start_observability, stat_sample
    from infra.topics import require_topics

    settings = load_settings(
        AlertSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        alerts_app_id=args.app_id,
        alerts_web_port=args.web_port,
    )
    configure_logging(settings.log_level)
    observability = start_observability(settings, "alerts")
    require_topics(settings, [*INPUTS, Topic.ALERT_TICKS, Topic.ALERTS, Topic.ALERTS_FHIR, Topic.DEAD_LETTER])
    event_loop = use_event_loop(settings)
    app, stats = build_app(settings)
    health = observability.health

    @app.timer(1.0)
    async def _heartbeat() -> None:  # runs on the worker's event loop: a blocked loop fails /healthz
        health.tick()
        health.set("faust", not app.rebalancing, "rebalancing" if app.rebalancing else "partitions assigned")

    observability.counter_from("icu_alerts_messages", "Vitals, detections, camera statuses and acks processed.",
                               functools.partial(stat_sample, stats, "messages"))  # fmt: skip
    observability.counter_from("icu_alerts_acks_ignored", "Acks of alerts no longer open (audit trail only).",
                               functools.partial(stat_sample, stats, "acks_ignored"))  # fmt: skip
    observability.counter_from("icu_alert_versions", "Alert versions published, by code, priority and state.",
                               lambda: by_label(stats.versions_by), ("code", "priority", "state"))  # fmt: skip
    observability.counter_from("icu_dead_letters", "Records sent to the dead-letter topic.",
                               lambda: [(("alerts",), float(stats.dead_lettered))], ("stage",))  # fmt: skip
    log.info("alerts worker %s: %s.{vitals,detections,camera-status,alert-acks} -> %s.alerts + %s.alerts-fhir "
             "(%s event loop; Ctrl-C stops)", settings.alerts_app_id, settings.topic_prefix, settings.topic_prefix,
             settings.topic_prefix, event_loop)  # fmt: skip
    try:
        Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False).execute_from_commandline()
    finally:  # mode's Worker always ends by raising SystemExit: the summary is printed on the way out
        observability.close()
        summary = {"messages": stats.messages, "alert_versions": stats.versions,
                   "dead_lettered": stats.dead_lettered, "acks_ignored": stats.acks_ignored}  # fmt: skip
        print(json.dumps(summary), flush=True)


def _cmd_infer(args: argparse.Namespace) -> int:
    from icu.contracts import Topic
    from icu.kafka import GracefulStop, close_producer, create_renewing_producer
    from inference.worker import InferenceWorker, InferSettings, build_engine, consume_loop, observe
    from infra.observability import start_observability
    from infra.topics import require_topics

    settings = load_settings(
        InferSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        infer_weights=args.weights,
        infer_device=args.device,
    )
    configure_logging(settings.log_level)
    observability = start_observability(settings, "infer")  # /healthz answers while the model loads
    engine = build_engine(settings)
    require_topics(settings, [Topic.FRAMES, Topic.DETECTIONS, Topic.EVIDENCE, Topic.DEAD_LETTER])
    stop = GracefulStop().install()
    producer = create_renewing_producer(settings, name="inference")
    worker = InferenceWorker(settings, engine, producer)
    loop = consume_loop(settings, worker, producer, stop)
    observe(observability, worker, loop)
    observability.health.set("kafka", True, "topics present, consumer started")
    log.info("inference worker in group %s: %s.frames -> %s.detections + %s.evidence (Ctrl-C stops)",
             settings.infer_group, settings.topic_prefix, settings.topic_prefix, settings.topic_prefix)  # fmt: skip
    try:
        stats = loop.run()
    finally:
        close_producer(producer, 10)
        engine.close()
        observability.close()
    print(json.dumps({"frames": engine.stats.frames, "detections": engine.stats.detections,
                      "evidence": engine.stats.evidence, "dead_lettered": stats.dead_lettered,
                      "batches": stats.batches}))  # fmt: skip
    return 0


def _cmd_sink(args: argparse.Namespace) -> int:
    from icu.contracts import Topic
    from icu.kafka import GracefulStop, close_producer, create_renewing_producer
    from infra.db.migrate import redact
    from infra.db.sink import SINK_TOPICS, DatabaseSink, SinkSettings, consume_loop, observe
    from infra.observability import start_observability
    from infra.topics import require_topics

    settings = load_settings(
        SinkSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        database_url=args.database_url,
        sink_group=args.group,
        sink_max_batch=args.max_batch,
        sink_start=args.start,
    )
    configure_logging(settings.log_level)
    url = settings.require_database_url()
    observability = start_observability(settings, "sink")
    require_topics(settings, [*SINK_TOPICS, Topic.DEAD_LETTER])
    sink = DatabaseSink(url, timeout_s=settings.sink_db_timeout_s)
    try:
        version = sink.require_schema()
        stop = GracefulStop().install()
        producer = create_renewing_producer(settings, name="sink dead letters")
        try:
            loop = consume_loop(settings, sink, producer, stop)
            observe(observability, sink, loop)
            observability.health.set("kafka", True, "topics present, consumer started")
            observability.health.set("schema", True, f"version {version}")
            log.info("database sink in group %s: %s.{%s} -> %s (schema %d, Ctrl-C stops)", settings.sink_group,
                     settings.topic_prefix, ",".join(t.value for t in SINK_TOPICS), redact(url), version)  # fmt: skip
            stats = loop.run()
        finally:
            close_producer(producer, 10)
    finally:
        sink.close()
        observability.close()
    print(json.dumps({**sink.stats.summary(), "dead_lettered": stats.dead_lettered, "batches": stats.batches}))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from inference.evaluate import EvalError
    from inference.train import TrainError, train

    configure_logging("INFO")
    try:
        state = train(data=args.data, config=args.config, out=args.out, resume=args.resume, device=args.device,
                      epochs=args.epochs, max_minutes=args.max_minutes, stop_after=args.stop_after,
                      workers=args.workers)  # fmt: skip
    except (TrainError, EvalError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps({"epochs": state["epoch"], "best_epoch": state["best_epoch"], "best_score": state["best_score"],
                      "weights": str(args.out / "model.pt")}))  # fmt: skip
    return 0


def _cmd_fit_decisions(args: argparse.Namespace) -> int:
    from inference.decisions import DecisionRuleError
    from inference.evaluate import EvalError
    from inference.train import TrainError, fit_decisions_on

    configure_logging("INFO")
    try:
        rules, fits = fit_decisions_on(weights=args.weights, data=args.data, device=args.device, workers=args.workers)
    except (TrainError, EvalError, DecisionRuleError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps({"weights": str(args.weights), "decision": rules.to_dict(),
                      "fit": {name: {"score": round(fit.score, 4), "threshold_score": round(fit.threshold_score, 4)}
                              for name, fit in fits.items()}}))  # fmt: skip
    return 0


def _add_clip_job_flags(parser: argparse.ArgumentParser) -> None:
    """--device and --workers of the commands that run a model over a clip set."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--workers", type=int, help="processes decoding the clips (default: one per CPU core)")


def _detector_net_config(args: argparse.Namespace) -> dict[str, Any]:
    """The detector's own config from the command's flags, when they change it (``--align-px``,
    a flag of train-twitch only)."""
    if args.finding != "twitch" or not args.align_px:
        return {}
    from inference.twitch import TwitchConfig

    try:
        return {"net_config": TwitchConfig(align_px=args.align_px)}
    except ValueError as exc:
        raise ConfigError(f"--align-px: {exc}") from None


def _cmd_train_detector(args: argparse.Namespace) -> int:
    """icu train-grimace and icu train-twitch: the same flags, the same output."""
    from inference.decisions import DecisionRuleError
    from inference.evaluate import EvalError
    from inference.train import TrainError
    from inference.train_grimace import GrimaceTrainConfig, train_grimace
    from inference.train_twitch import TwitchTrainConfig, train_twitch

    configure_logging("INFO")
    config_class, train = (
        (GrimaceTrainConfig, train_grimace) if args.finding == "grimace" else (TwitchTrainConfig, train_twitch)
    )
    defaults = config_class()
    try:
        steps = defaults.steps if args.steps is None else args.steps
        config = config_class(
            seed=defaults.seed if args.seed is None else args.seed,
            steps=steps,
            # Unless given, no more plain steps than steps: --steps alone shortens the schedule.
            plain_steps=min(defaults.plain_steps, steps) if args.plain_steps is None else args.plain_steps,
            validate_augmented=args.validate_augmented,
            augmentation=defaults.augmentation if args.augmentation is None else args.augmentation,
        )
        stored = train(data=args.data, weights=args.weights, config=config, device=args.device,  # type: ignore[arg-type]
                       workers=args.workers, **_detector_net_config(args))  # fmt: skip
    except (TrainError, EvalError, DecisionRuleError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps({"weights": str(args.weights), "step": stored["step"], "validation": stored["validation"],
                      "decision": stored["decision"][args.finding]}))  # fmt: skip
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from inference.evaluate import EvalError, evaluate

    if args.target == "alerts":
        return _cmd_eval_alerts(args)
    if args.data is None:
        raise ConfigError("icu eval needs --data DIR (a clip directory), or the target 'alerts' with --recording")
    try:
        result = evaluate(
            args.data, model=args.model, weights=args.weights, decisions=args.decisions, group_by=args.group_by or ()
        )
    except EvalError as exc:
        raise ConfigError(str(exc)) from None
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


# --- research: record, replay, evaluate --------------------------------------------------------


def _cmd_record(args: argparse.Namespace) -> int:
    from icu.contracts import Topic
    from icu.kafka import GracefulStop
    from research.record import record
    from research.store import RECORDED_TOPICS

    blur = args.blur_faces if args.blur_faces is not None else args.export
    try:
        if args.simulate:
            return _record_simulated(args)
        topics = [Topic(t) for t in args.topics.split(",")] if args.topics else list(RECORDED_TOPICS)
        settings = load_settings(TopicsAdminSettings, kafka_bootstrap_servers=args.kafka_bootstrap_servers,
                                 topic_prefix=args.topic_prefix)  # fmt: skip
        configure_logging(settings.log_level)
        beds = [b.strip() for b in (args.beds or "").split(",") if b.strip()]
        manifest = record(settings, args.out, topics=topics, beds=beds, duration_s=args.duration,
                          idle_s=args.until_idle, start=args.start, blur_faces=blur, truth=args.truth,
                          stop=GracefulStop().install())  # fmt: skip
    except ValueError as exc:  # a --topics name that is no topic
        raise ConfigError(str(exc)) from None
    print(manifest.model_dump_json(exclude={"topics", "cameras"}))
    return 0


def _record_simulated(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from research.simulate import write_simulated_recording
    from simulator.scenario import library_names

    names = args.scenario or library_names()
    start = datetime.fromisoformat(args.sim_start) if args.sim_start else datetime.now(UTC).replace(microsecond=0)
    if start.tzinfo is None:
        raise ConfigError(f"--sim-start {args.sim_start!r} needs a timezone, e.g. 2026-01-01T00:00:00+00:00")
    manifest = write_simulated_recording(args.out, _scenarios(names), start=start, seed=args.seed or 0,
                                         false_rate=args.false_rate)  # fmt: skip
    print(manifest.model_dump_json(exclude={"topics", "cameras"}))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from icu.contracts import Topic
    from icu.kafka import GracefulStop
    from infra.topics import create_topics
    from research.replay import REPLAYED_BY_DEFAULT, parse_speed, replay
    from research.store import Recording

    settings = load_settings(TopicsAdminSettings, kafka_bootstrap_servers=args.kafka_bootstrap_servers,
                             topic_prefix=args.topic_prefix)  # fmt: skip
    configure_logging(settings.log_level)
    try:
        speed = parse_speed(args.speed)
        topics = [Topic(t) for t in args.topics.split(",")] if args.topics else list(REPLAYED_BY_DEFAULT)
        recording = Recording(args.recording)
        create_topics(settings)  # idempotent: a fresh replay prefix needs its topics
        result = replay(recording, settings, speed=speed, topics=topics, keep_times=args.keep_times,
                        capture=args.capture, settle_s=args.settle, stop=GracefulStop().install())  # fmt: skip
    except ValueError as exc:  # a --topics name that is no topic
        raise ConfigError(str(exc)) from None
    records = result.records()
    print(json.dumps({"topic_prefix": settings.topic_prefix, "published": result.published, "records": records,
                      "publish_s": round(result.publish_s, 3),
                      "records_per_s": round(records / result.publish_s, 1) if result.publish_s else None,
                      "shift_s": result.shift_s,
                      "capture": None if args.capture is None else str(args.capture)}))  # fmt: skip
    return 0


def _cmd_eval_alerts(args: argparse.Namespace) -> int:
    from research.evaluate import evaluate_recording, load_annotations, table
    from research.plot import plot_alerts
    from research.store import Recording

    if args.recording is None:
        raise ConfigError("icu eval alerts needs --recording DIR")
    recording = Recording(args.recording)
    replayed = Recording(args.replay) if args.replay is not None else None
    result = evaluate_recording(recording, replay=replayed, annotations=args.annotations, grace_s=args.grace,
                                core=args.core)  # fmt: skip
    summary = result.summary()
    plot = args.plot or (args.out.with_suffix(".png") if args.out is not None else None)
    manifest = recording.manifest
    if plot is not None and manifest.start is not None and manifest.end is not None:
        truth = args.annotations or recording.truth_path()
        assert truth is not None  # evaluate_recording refused a recording without truth
        plot_alerts(plot, beds=manifest.bed_ids(), start=manifest.start, end=manifest.end,
                    annotations=load_annotations(truth), raises=result.raises,
                    false_ids={r.alert_id for r in result.false_raises},
                    title=f"alerts against truth: {args.recording.name}")  # fmt: skip
    text = json.dumps(summary, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".txt").write_text(table(summary) + "\n")
    print(table(summary), file=sys.stderr)
    print(text)
    return 0


def _add_research_parsers(commands: Any, evaluation: argparse.ArgumentParser) -> None:
    group = evaluation.add_argument_group("icu eval alerts")
    group.add_argument("--recording", type=Path, help="the recording whose truth (and alerts) are scored")
    group.add_argument(
        "--replay", type=Path, help="alerts captured from a replay of it (icu replay --capture); default: its own"
    )
    group.add_argument(
        "--core", action="store_true", help="score the alerts core run over the recording's inputs (no Kafka)"
    )
    group.add_argument("--annotations", type=Path, help="annotation file (JSON Lines) instead of the recording's truth")
    group.add_argument(
        "--grace", type=float, default=120.0, help="an alert up to this long after an event's end still catches it (s)"
    )
    group.add_argument("--plot", type=Path, help="PNG of alerts against truth (default: next to --out)")

    recorder = commands.add_parser(
        "record",
        help="capture frames, vitals, detections, evidence and alerts into a portable recording",
        description="Records a deployment's topics into DIR: manifest.json (format and contract versions, models, "
        "time range, beds, files), one JSON Lines file per topic (records in arrival order with partition, offset, "
        "key and Kafka timestamp), and per camera an MP4 holding the frames' JPEGs unchanged (MJPEG) with a "
        "timestamps sidecar (video/<camera>.frames.jsonl). A group-less consumer: the services lose nothing. "
        "Stops after --duration (wall seconds), --until-idle, or Ctrl-C. --truth attaches ground truth (icu sim "
        "ward --truth) or annotations. --export blurs faces in frames and evidence keyframes for sharing "
        "(--no-blur-faces to keep them). --simulate writes a recording straight from the simulator (no broker): "
        "one bed per scenario, monitor vitals and detections from the truth with seeded errors, and the truth.",
    )
    _add_kafka_flags(recorder)
    recorder.add_argument("--out", type=Path, required=True, help="new folder for the recording")
    recorder.add_argument("--beds", help="comma-separated beds to keep (default: every bed)")
    recorder.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    recorder.add_argument("--until-idle", type=float, metavar="S", help="stop after S seconds without a record")
    recorder.add_argument(
        "--topics", help="comma-separated topics (default frames,vitals,detections,evidence,alerts,alert-acks,"
        "camera-status)"
    )  # fmt: skip
    recorder.add_argument(
        "--from", dest="start", choices=["latest", "earliest"], default="latest",
        help="latest: from now on (default); earliest: what the broker still retains",
    )  # fmt: skip
    recorder.add_argument("--truth", type=Path, help="ground truth / annotations (JSON Lines) to attach")
    recorder.add_argument("--export", action="store_true", help="a recording for sharing: faces blurred by default")
    recorder.add_argument(
        "--blur-faces", action=argparse.BooleanOptionalAction, default=None,
        help="blur faces in frames and evidence keyframes (default: on with --export, else off)",
    )  # fmt: skip
    recorder.add_argument("--simulate", action="store_true", help="record the simulator's scenarios, no broker")
    recorder.add_argument("--scenario", action="append", metavar="NAME|FILE", help="with --simulate: scenario per "
                          "bed, repeatable (default: the whole library)")  # fmt: skip
    recorder.add_argument("--seed", type=int, help="with --simulate: seed of the detector errors (default 0)")
    recorder.add_argument(
        "--false-rate", type=float, default=0.005, help="with --simulate: share of seconds with a spurious finding"
    )
    recorder.add_argument("--sim-start", help="with --simulate: ISO start time with timezone (default now)")
    recorder.set_defaults(handler=_cmd_record)

    replayer = commands.add_parser(
        "replay",
        help="republish a recording into Kafka under a separate topic prefix",
        description="Republishes DIR's inputs (frames with their headers, vitals, detections, evidence, camera "
        "status, acks; never its alerts) onto <prefix>.* with the original relative timing: a record t seconds "
        "into the recording goes out t/--speed seconds after the start, or as fast as Kafka takes them with "
        "--speed max. Each bed's order per topic is the recorded one; files stream from disk (bounded memory). "
        "Timestamps are moved by a whole number of seconds so the recording starts now (--keep-times: the "
        "original times). The topics of the prefix are created if missing. --capture DIR2 also records the alerts "
        "raised on <prefix>.alerts (run icu alerts on that prefix) for icu eval alerts --replay DIR2.",
    )
    replayer.add_argument("recording", type=Path, metavar="DIR", help="the recording")
    replayer.add_argument(
        "--bootstrap-servers", dest="kafka_bootstrap_servers",
        help=_env("Kafka host:port list", "ICU_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )  # fmt: skip
    replayer.add_argument(
        "--topic-prefix", default="replay", help="prefix to replay under, never the live one (default replay)"
    )
    replayer.add_argument("--speed", default="1", help="1, 10, any factor, or max (default 1)")
    replayer.add_argument("--topics", help="comma-separated topics to replay (default: every input topic recorded)")
    replayer.add_argument("--keep-times", action="store_true", help="republish the original timestamps")
    replayer.add_argument("--capture", type=Path, metavar="DIR2", help="also record the alerts raised on the replay")
    replayer.add_argument(
        "--settle", type=float, default=15.0, help="with --capture: stop this long after the last alert (s)"
    )
    replayer.set_defaults(handler=_cmd_replay)


def _cmd_bench_inference(args: argparse.Namespace) -> int:
    from inference.bench import bench_inference

    if args.beds < 1 or args.seconds <= 0:
        raise ConfigError("--beds and --seconds must be positive")
    print(json.dumps(bench_inference(beds=args.beds, seconds=args.seconds, weights=args.weights, device=args.device),
                     indent=2))  # fmt: skip
    return 0


def _cmd_bench_alerts(args: argparse.Namespace) -> int:
    from alerts.bench import bench_alerts

    if args.beds < 1 or args.seconds <= 0 or args.latency_beds < 1:
        raise ConfigError("--beds, --seconds and --latency-beds must be positive")
    print(json.dumps(bench_alerts(beds=args.beds, seconds=args.seconds, latency_beds=args.latency_beds), indent=2))
    return 0


def _cmd_bench_ingest(args: argparse.Namespace) -> int:
    from ingest.bench import bench_ingest

    if args.cameras < 1 or args.seconds <= 0 or args.repeats < 1:
        raise ConfigError("--cameras, --seconds and --repeats must be positive")
    result = bench_ingest(cameras=args.cameras, seconds=args.seconds, repeats=args.repeats, fps=args.fps)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import getpass
    import os
    import subprocess

    from dashboard.auth import AuthError, hash_password
    from dashboard.settings import DashboardSettings

    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        try:
            print(hash_password(password))
        except AuthError as exc:
            raise ConfigError(str(exc)) from None
        return 0
    settings = load_settings(
        DashboardSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        database_url=args.database_url,
        dashboard_host=args.host,
        dashboard_port=args.port,
    )
    configure_logging(settings.log_level)
    settings.require_database_url()
    if not settings.demo and not settings.users() and not Path(".streamlit/secrets.toml").is_file():
        raise ConfigError(
            "no login configured: set ICU_DASHBOARD_USERS (name:hash pairs from `icu dashboard --hash-password`), "
            "or [auth] in .streamlit/secrets.toml for OIDC; ICU_DEMO=1 allows anonymous access"
        )
    from infra.ports import free_port

    port = settings.dashboard_port or free_port(settings.dashboard_host)
    env = {**os.environ, "ICU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "ICU_TOPIC_PREFIX": settings.topic_prefix, "ICU_DATABASE_URL": settings.require_database_url()}  # fmt: skip
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", settings.dashboard_host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]  # fmt: skip
    log.info("dashboard on http://%s:%d (Ctrl-C stops)", settings.dashboard_host, port)
    return subprocess.run(argv, env=env, check=False).returncode


def _cmd_bench_dashboard(args: argparse.Namespace) -> int:
    from dashboard.bench import bench_dashboard

    if args.beds < 1 or args.hours <= 0 or args.repeats < 1:
        raise ConfigError("--beds, --hours and --repeats must be positive")
    result = bench_dashboard(database_url=args.database_url, beds=args.beds, hours=args.hours, repeats=args.repeats,
                             screenshots=args.screenshots)  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


def _add_dashboard_parser(commands: Any, bench: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="run the nurses' Streamlit dashboard: ward, patient, alerts and system pages",
        description="Runs `streamlit run` on dashboard/app.py. Reads the database (ICU_DATABASE_URL) and publishes "
        "acknowledgements and capped snoozes (ICU_ALERT_MAX_SNOOZE_S) to <prefix>.alert-acks with the user's name. "
        "Pages refresh every ICU_DASHBOARD_REFRESH_S seconds; vitals older than ICU_DASHBOARD_STALE_VITALS_S (HR, "
        "RR, SpO2) or their charting interval (BP, temperature) are greyed, and a bed without vitals for "
        "ICU_DASHBOARD_LOST_VITALS_S or without camera status for ICU_DASHBOARD_STALE_CAMERA_S is flagged. Login: "
        "OIDC with st.login when [auth] is in .streamlit/secrets.toml; else ICU_DASHBOARD_USERS ('name:hash' "
        "pairs, hashes from --hash-password); anonymous only with ICU_DEMO=1.",
    )
    _add_kafka_flags(dashboard)
    dashboard.add_argument("--database-url", dest="database_url", help=_env("PostgreSQL URL", "ICU_DATABASE_URL"))
    dashboard.add_argument("--host", help=_env("address to listen on", "ICU_DASHBOARD_HOST", "127.0.0.1"))
    dashboard.add_argument("--port", type=int, help=_env("port, 0 = any free", "ICU_DASHBOARD_PORT", 8501))
    dashboard.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (prompt, or one line of stdin) and print its hash for ICU_DASHBOARD_USERS",
    )
    dashboard.set_defaults(handler=_cmd_dashboard)

    bench_dashboard = bench.add_parser(
        "dashboard",
        help="dashboard page render time for 32 beds with 24 h of data (target: ward page <= 1.5 s)",
        description="Seeds a scratch database (next to ICU_DATABASE_URL's, or an embedded PostgreSQL when unset) "
        "with --beds beds x --hours hours of 1 Hz vitals and detections by COPY, refreshes the rollups, then renders "
        "the ward and patient pages --repeats times each with Streamlit's AppTest (queries, core and layout, no "
        "browser) and prints seed time and the median render times. With --screenshots DIR it also serves the app "
        "with `streamlit run` and saves dashboard-ward.png and dashboard-patient.png from Chromium "
        "(/usr/bin/chromium).",
    )
    _add_database_flags(bench_dashboard)
    bench_dashboard.add_argument("--beds", type=int, default=32, help="beds (default 32)")
    bench_dashboard.add_argument("--hours", type=float, default=24.0, help="hours of data per bed (default 24)")
    bench_dashboard.add_argument("--repeats", type=int, default=7, help="renders to take the median of (default 7)")
    bench_dashboard.add_argument("--screenshots", type=Path, metavar="DIR", help="also save page screenshots here")
    bench_dashboard.set_defaults(handler=_cmd_bench_dashboard)


# The function's argument each `icu news2` flag feeds, for error messages that name the flag.
_NEWS2_FLAGS = {"rr": "--rr", "spo2": "--spo2", "spo2_scale": "--scale", "on_oxygen": "--oxygen/--air",
                "sbp": "--sbp", "hr": "--hr", "consciousness": "--consciousness", "temp_c": "--temp"}  # fmt: skip


def _cmd_news2(args: argparse.Namespace) -> int:
    from alerts.news2 import News2Error, score_news2

    try:
        result = score_news2(rr=args.rr, spo2=args.spo2, spo2_scale=args.scale, on_oxygen=args.on_oxygen,
                             sbp=args.sbp, hr=args.hr, consciousness=args.consciousness, temp_c=args.temp)  # fmt: skip
    except News2Error as exc:
        raise ConfigError(f"{_NEWS2_FLAGS.get(exc.argument, exc.argument)}: {exc.problem}") from None
    print(json.dumps(result.to_dict()))
    return 0


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icu",
        description="icu-watch: ICU remote-monitoring streaming pipeline. Not a medical device; "
        "the video model is trained on synthetic data and is not clinically validated.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"icu-watch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="run the embedded Kafka broker and PostgreSQL in the foreground",
        description="Start the embedded Kafka-protocol broker (Tansu, in memory, 127.0.0.1) and a PostgreSQL "
        "(ICU_DATABASE_URL, or an embedded one kept under the state folder), migrate the schema, create the "
        "topics, print the env lines other commands need, and run until Ctrl-C / SIGTERM.",
    )
    up.add_argument(
        "--broker-port",
        type=int,
        help=_env("broker port on 127.0.0.1, 0 = any free", "ICU_BROKER_PORT", 9092),
    )
    up.add_argument(
        "--postgres-port",
        type=int,
        help=_env("embedded PostgreSQL port, 0 = any free", "ICU_POSTGRES_PORT", 5433),
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        help=_env("data folder for the embedded database", "ICU_STATE_DIR", "~/.local/state/icu-watch"),
    )
    up.add_argument("--topic-prefix", dest="topic_prefix", help=_env("topic name prefix", "ICU_TOPIC_PREFIX", "icu"))
    _add_database_flags(up)
    up.set_defaults(handler=_cmd_up)

    topics = commands.add_parser("topics", help="create or list the Kafka topics").add_subparsers(
        dest="topics_command", metavar="ACTION", required=True
    )
    create = topics.add_parser(
        "create",
        help="create every topic (idempotent)",
        description="Create every icu-watch topic with explicit partitions and "
        "retention. Existing topics are left unchanged.",
    )
    _add_kafka_flags(create)
    create.add_argument(
        "--partitions", type=int, help=_env("partitions per bed-keyed topic", "ICU_TOPIC_PARTITIONS", 8)
    )
    create.set_defaults(handler=_cmd_topics_create)
    listing = topics.add_parser("list", help="list this deployment's topics with partition counts")
    _add_kafka_flags(listing)
    listing.add_argument("--all", action="store_true", help="list every topic on the cluster, not just this prefix")
    listing.set_defaults(handler=_cmd_topics_list)

    db = commands.add_parser("db", help="database migrations and maintenance").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db_migrate = db.add_parser("migrate", help="apply pending schema migrations (safe to repeat; never deletes data)")
    _add_database_flags(db_migrate)
    db_migrate.set_defaults(handler=_cmd_db_migrate)
    db_maintain = db.add_parser(
        "maintain",
        help="one pass: create partitions, drop data older than ICU_DATABASE_RETENTION_DAYS, refresh rollups",
    )
    _add_database_flags(db_maintain)
    db_maintain.set_defaults(handler=_cmd_db_maintain)

    schemas = commands.add_parser("schemas", help="JSON Schema files for the topics").add_subparsers(
        dest="schemas_command", metavar="ACTION", required=True
    )
    export = schemas.add_parser("export", help="write one JSON Schema per JSON topic (and frame headers)")
    export.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default ./schemas)")
    export.add_argument("--check", action="store_true", help="fail if the folder's files differ from the code")
    export.set_defaults(handler=_cmd_schemas_export)

    bench = commands.add_parser("bench", help="benchmarks that print figures").add_subparsers(
        dest="bench_command", metavar="STAGE", required=True
    )
    bench_all = bench.add_parser(
        "all",
        help="every stage's benchmark in turn, one Markdown table of figures, limits and ratios (--quick: ~3 min)",
        description="Runs the broker, db, sim, ingest, inference, alerts and dashboard benchmarks one after the "
        "other, at sizes no larger than their own defaults (--quick: about 3 minutes on 2 CPU cores; default: "
        "about 6 to 8), and prints one Markdown table: each figure with the limit it is measured against "
        "(a raw limit measured in the same run, or the project's target) and their ratio, then the end-to-end "
        "latencies frame capture -> detection and threshold-crossing vital -> alert (p50/p99). Progress goes to "
        "stderr. Each stage starts its own embedded broker; the db and dashboard stages work in scratch databases "
        "created beside ICU_DATABASE_URL's and dropped, or in an embedded PostgreSQL started for them when it is "
        "unset. A stage that fails is a 'failed: <reason>' row and the exit status is 1. For one stage's full "
        "figures and flags, use `icu bench <stage>`.",
    )
    bench_all.add_argument("--quick", action="store_true", help="smaller sizes: about 3 minutes on 2 CPU cores")
    bench_all.add_argument(
        "--stages",
        metavar="LIST",
        help="comma-separated subset, run in the order given "
        "(broker,db,sim,ingest,inference,alerts,dashboard; default all)",
    )
    bench_all.add_argument("--out", type=Path, metavar="FILE.json", help="also write every result as JSON here")
    bench_all.add_argument("--markdown", type=Path, metavar="FILE.md", help="also write the table here")
    bench_all.add_argument("--database-url", dest="database_url", help=_env("PostgreSQL URL", "ICU_DATABASE_URL"))
    bench_all.add_argument(
        "--weights",
        type=Path,
        help="inference: model.pt (default: an untrained temporal-small-attnpool, the packaged architecture)",
    )
    bench_all.add_argument("--device", default="auto", help="inference: auto, cpu, cuda (default auto)")
    bench_all.set_defaults(handler=_cmd_bench_all)
    bench_db = bench.add_parser(
        "db",
        help="COPY rate into vitals: raw COPY vs the project's write path",
        description="Creates a scratch database next to ICU_DATABASE_URL's, migrates it, measures rows/s "
        "of raw COPY and of the write path (staging COPY + idempotent insert), and drops it.",
    )
    _add_database_flags(bench_db)
    bench_db.add_argument("--rows", type=int, default=200_000, help="rows per measurement (default 200000)")
    bench_db.add_argument("--batch", type=int, default=5_000, help="rows per write-path batch (default 5000)")
    bench_db.add_argument("--repeats", type=int, default=5, help="measurements to take the median of (default 5)")
    bench_db.set_defaults(handler=_cmd_bench_db)
    bench_broker = bench.add_parser("broker", help="embedded broker start time and topic creation time")
    bench_broker.add_argument("--repeats", type=int, default=5, help="runs to take the median of (default 5)")
    bench_broker.set_defaults(handler=_cmd_bench_broker)

    bench_sim = bench.add_parser(
        "sim",
        help="simulator rendering cost per frame on one core (target <= 2 ms at 320x240)",
        description="Renders random clip scenarios single-threaded and prints ms per frame for rendering, "
        "JPEG encoding and H.264 clip writing, with the ratio to the 2 ms render target.",
    )
    bench_sim.add_argument("--frames", type=int, default=600, help="frames per repeat (default 600)")
    bench_sim.add_argument("--repeats", type=int, default=5, help="repeats to take the median of (default 5)")
    bench_sim.add_argument("--size", default="320x240", help="frame size WIDTHxHEIGHT (default 320x240)")
    bench_sim.set_defaults(handler=_cmd_bench_sim)

    bench_ingest = bench.add_parser(
        "ingest",
        help="camera ingest throughput, CPU per camera and capture-to-broker latency (target >= 32 cameras/core)",
        description="Runs N file cameras (simulated 320x240 H.264 clips) through the ingest path on an embedded "
        "broker, paced at their frame rate and then unpaced, and a raw kafka-python producer with messages of the "
        "same size: prints frames/s, CPU per camera, cameras per core, capture-to-broker p50/p99 and the ratio of "
        "unpaced ingest throughput to the raw producer's. Medians over --repeats.",
    )
    bench_ingest.add_argument("--cameras", type=int, default=32, help="cameras in the one process (default 32)")
    bench_ingest.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (default 10)")
    bench_ingest.add_argument("--repeats", type=int, default=3, help="runs to take the median of (default 3)")
    bench_ingest.add_argument("--fps", type=float, default=10.0, help="frames/s per camera (default 10)")
    bench_ingest.set_defaults(handler=_cmd_bench_ingest)

    bench_inference = bench.add_parser(
        "inference",
        help="model and worker throughput, window latency (targets: >= 8 beds at 10 fps on 2 CPU cores)",
        description="Times the model's per-frame encoder (frames/s by batch), its grimace and twitch detectors when "
        "it has them (frames/s by batch) and its temporal heads (windows/s by batch), then one inference worker over "
        "--beds simulated beds at 10 fps through an embedded broker: paced like live cameras (window latency "
        "p50/p99) and unpaced (sustained frames/s, as a ratio of the raw model's per frame: encoder plus detectors).",
    )
    bench_inference.add_argument("--beds", type=int, default=8, help="simulated beds (default 8)")
    bench_inference.add_argument("--seconds", type=float, default=20.0, help="seconds of video per run (default 20)")
    bench_inference.add_argument(
        "--weights",
        type=Path,
        help="model.pt (default: an untrained temporal-small-attnpool with a grimace detector, the packaged "
        "architecture)",
    )
    bench_inference.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    bench_inference.set_defaults(handler=_cmd_bench_inference)

    bench_alerts = bench.add_parser(
        "alerts",
        help="alerts worker throughput and vitals-to-alert latency (targets: 5,000 messages/s, p99 <= 1 s)",
        description="Publishes --beds simulated beds' vitals and 1 Hz detections (--seconds of a stable course), "
        "starts one `icu alerts` worker on an embedded broker and measures the messages/s it sustains (from its own "
        "count of handled messages) against two limits over the same records: kafka-python's raw consume-produce "
        "loop (run before and after the worker) and Faust's own ceiling (an agent with the worker's settings that "
        "only counts events); then, with the "
        "worker caught up, --latency-beds beds send live vitals that turn severe at random: latency from the "
        "reading that moves the last minute's median across the NEWS2 band to the alert on <prefix>.alerts, p50/p99.",
    )
    bench_alerts.add_argument("--beds", type=int, default=100, help="beds in the backlog (default 100)")
    bench_alerts.add_argument("--seconds", type=float, default=300.0, help="seconds of data per bed (default 300)")
    bench_alerts.add_argument("--latency-beds", type=int, default=40, help="live beds for latency (default 40)")
    bench_alerts.set_defaults(handler=_cmd_bench_alerts)

    from ingest.cli import add_ingest_command

    add_ingest_command(commands)

    alerting = commands.add_parser(
        "alerts",
        help="run the alerts stream processor: vitals + detections -> alerts (Faust)",
        description="A Faust worker (at-least-once) consuming <prefix>.vitals, .detections, .camera-status and "
        ".alert-acks. Per bed it keeps the latest vitals (median of the last minute for monitored numbers), NEWS2 "
        "and its trend, and the last minutes of video findings in a table recovered from its changelog after a "
        "restart, and runs the rules: NEWS2 bands and red scores, video apnea >= 20 s, rhythmic twitching "
        "(possible seizure), jerk clusters, sustained grimacing, deterioration trends, and technical alerts "
        "(camera lost, vitals stale, poor video) kept apart. Each alert has one open version per bed and rule; it "
        "escalates when unacknowledged (ICU_ALERT_ESCALATE_*_S), takes acknowledgements and capped snoozes from "
        ".alert-acks, and resolves after staying clear for ICU_ALERT_HOLD_S. Every version goes to <prefix>.alerts "
        "(upsert on alert_id + version) and as a FHIR R4 DetectedIssue to <prefix>.alerts-fhir (docs/fhir.md). "
        "Malformed records go to <prefix>.dead-letter. Video findings come from a model trained on synthetic data "
        "that is not clinically validated.",
    )
    alerting.add_argument("--app-id", help=_env("Faust app id = consumer group", "ICU_ALERTS_APP_ID", "icu-alerts"))
    alerting.add_argument("--web-port", type=int, help=_env("Faust web port on 127.0.0.1", "ICU_ALERTS_WEB_PORT", 6066))
    _add_kafka_flags(alerting)
    alerting.set_defaults(handler=_cmd_alerts)

    infer = commands.add_parser(
        "infer",
        help="run an inference worker: frames -> detections (scale out by starting more)",
        description="Consumes <prefix>.frames in a Kafka consumer group (ICU_INFER_GROUP; more workers share the "
        "beds), keeps each bed's last seconds, runs the temporal model over sliding windows batched across beds "
        "(CUDA with autocast when present, else CPU threads) and publishes a detection per bed every "
        "ICU_INFER_HOP_S seconds to <prefix>.detections: grimace/twitch/apnea probabilities, learned and classical "
        "respiration rate, signal quality, degraded windows flagged, and the findings the weights' decision rules "
        "hold present. Each detection describes the frame 2 s before the newest (the model's lookahead). When a "
        "finding starts, an evidence record (keyframe JPEG with the model's attention overlaid) goes to "
        "<prefix>.evidence. Undecodable or mis-sized frames go to <prefix>.dead-letter. Without --weights the "
        "packaged temporal-small-attnpool weights (and their decision rules) are used. The model is trained on "
        "synthetic data and is not clinically validated.",
    )
    infer.add_argument(
        "--weights",
        type=Path,
        help=_env("model.pt from icu train", "ICU_INFER_WEIGHTS", "packaged temporal-small-attnpool"),
    )
    infer.add_argument("--device", help=_env("auto, cpu, cuda, cuda:N", "ICU_INFER_DEVICE", "auto"))
    _add_kafka_flags(infer)
    infer.set_defaults(handler=_cmd_infer)

    sink = commands.add_parser(
        "sink",
        help="run the database sink: vitals, detections, evidence, camera status, alerts, acks -> PostgreSQL",
        description="Consumes <prefix>.vitals, .detections, .evidence, .camera-status, .alerts and .alert-acks in a "
        "Kafka consumer group (ICU_SINK_GROUP; more sinks share the partitions) and writes each polled batch "
        "(at most ICU_SINK_MAX_BATCH records) to PostgreSQL/TimescaleDB in one transaction, time series by COPY. "
        "Writes are idempotent (unique indexes, duplicates skipped), so redelivered or replayed records are never "
        "stored twice; the alerts table keeps each alert's highest version. Offsets are committed only after the "
        "batch is stored. When the database is down or restarting, consuming pauses and the same batch is retried "
        "with backoff (at most ICU_SINK_MAX_BACKOFF_S) on a new connection: nothing is lost. Malformed records and "
        "rows the database refuses go to <prefix>.dead-letter with the reason. <prefix>.alerts-fhir is not read. "
        "The schema must be migrated (icu db migrate). Prints a JSON summary on exit (Ctrl-C / SIGTERM).",
    )
    _add_kafka_flags(sink)
    sink.add_argument("--database-url", dest="database_url", help=_env("PostgreSQL URL", "ICU_DATABASE_URL"))
    sink.add_argument("--group", help=_env("Kafka consumer group", "ICU_SINK_GROUP", "icu-sink"))
    sink.add_argument("--max-batch", type=int, help=_env("most records per transaction", "ICU_SINK_MAX_BATCH", 2000))
    sink.add_argument(
        "--start",
        choices=["earliest", "latest"],
        help=_env("where a new group starts", "ICU_SINK_START", "earliest"),
    )
    sink.set_defaults(handler=_cmd_sink)

    training = commands.add_parser(
        "train",
        help="train the temporal model on a clip directory (seeded, resumable)",
        description="Trains the temporal video model on DIR in the clip dataset format (the simulator's, or your "
        "own annotated video in the same format): DIR/train + DIR/val when both exist, else a stable split by clip "
        "id. Validates each epoch, stops early, and writes OUT/last.pt (resume with --resume), OUT/model.pt (best "
        "weights, with per-finding decision rules fitted on the validation clips at the end, see icu fit-decisions) "
        "and OUT/model.json (config, validation metrics, decision rules). Same data, config, seed and thread count "
        "give the same weights. The model is trained on synthetic data and is not clinically validated.",
    )
    training.add_argument("--data", type=Path, required=True, help="clip directory")
    training.add_argument(
        "--config",
        default="temporal-small-attnpool",
        help="variant name or YAML file (default temporal-small-attnpool, the packaged weights' variant)",
    )
    training.add_argument("--out", type=Path, required=True, help="output folder")
    training.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    training.add_argument("--epochs", type=int, help="override the config's epoch count")
    training.add_argument(
        "--max-minutes",
        type=float,
        help="end training after the epoch that passes this much time (the log says which --stop-after reproduces it)",
    )
    training.add_argument(
        "--stop-after",
        type=int,
        metavar="EPOCH",
        help="end training after this epoch, keeping the learning-rate schedule of the full epoch count",
    )
    _add_clip_job_flags(training)
    training.set_defaults(handler=_cmd_train)

    evaluation = commands.add_parser(
        "eval",
        help="score a model on a labelled clip directory (clip dataset format) and print JSON",
        description="Runs a model over every clip of DIR (<id>.json labels + <id>.mp4, the clip dataset format; "
        "outside clip sets in the same format work too) and prints one JSON object: per finding (grimace, twitch, "
        "apnea) frame precision/recall/F1, edit score and segmental F1@50; respiration rate MAE, share within "
        "2 breaths/min and coverage; frames/s. A finding the clips do not label, or the model does not predict, "
        "is null. Models: classical = the non-learned baseline (optical-flow respiration, amplitude apnea, "
        "motion-burst twitch; no grimace); temporal = the learned model from --weights (grimace and twitch from "
        "their detectors when the weights carry them, see icu train-grimace and icu train-twitch), each finding "
        "decided by the decision rules stored with the weights (see --decisions and icu fit-decisions). The JSON "
        'then also holds the rules under "decision" and where grimace and twitch came from under "grimace_from" '
        'and "twitch_from".',
    )
    evaluation.add_argument(
        "target",
        nargs="?",
        choices=["alerts"],
        help="'alerts': score a recording's (or its replay's) alerts against ground truth (see icu eval alerts -h "
        "below: --recording, --replay, --annotations); omitted: score a model on --data",
    )
    evaluation.add_argument("--data", type=Path, help="clip directory (required without a target)")
    evaluation.add_argument(
        "--model", choices=["classical", "temporal"], default="classical", help="model to score (default classical)"
    )
    evaluation.add_argument(
        "--weights", type=Path, help="model.pt from icu train (for --model temporal; default: the packaged weights)"
    )
    evaluation.add_argument(
        "--decisions",
        choices=["fitted", "threshold"],
        default="fitted",
        help="for --model temporal: decide each finding with the rules stored with the weights, as icu infer does "
        "(fitted, the default), or with the plain 0.5 threshold on the probability (threshold)",
    )
    evaluation.add_argument(
        "--group-by",
        action="append",
        metavar="FIELD",
        help='also score each group of clips apart, under "groups" in the JSON: FIELD is a dotted path into '
        "the clips' JSON (the simulator's clips: meta.appearance.blanket_pattern, meta.appearance.breath_px, "
        "meta.split, ...; a numeric field with more than 3 distinct values is cut into 3 groups of about as many "
        "clips) or 'events' (each event type a clip holds; a clip with several is in each group, one with none in "
        "'none'); repeatable, the model runs once",
    )
    evaluation.add_argument("--out", type=Path, help="also write the JSON here")
    evaluation.set_defaults(handler=_cmd_eval)

    fitting = commands.add_parser(
        "fit-decisions",
        help="fit a model's per-finding decision rules on labelled clips and store them in its weights",
        description="Runs the temporal model of --weights over the clips of --data (normally the validation split "
        "the weights were trained with; never the split you will score on) and fits, per finding, the decision rule "
        "that turns its per-frame probability into present/absent: the trailing mean of a few frames, on at one "
        "level, off only after it has stayed below a lower one for some frames. The rule with the best mean of "
        "frame F1, edit score/100 and segmental F1@50 is kept; the plain 0.5 threshold is among those tried, so it "
        "is never worse on these clips. The rules are written into the weights file (and the .json beside it); "
        "icu eval, icu infer, its evidence and the alert rules then act on them. icu train does this itself at the "
        "end of training.",
    )
    fitting.add_argument("--weights", type=Path, required=True, help="model.pt to fit and update in place")
    fitting.add_argument("--data", type=Path, required=True, help="labelled clip directory (clip dataset format)")
    _add_clip_job_flags(fitting)
    fitting.set_defaults(handler=_cmd_fit_decisions)

    grimace = commands.add_parser(
        "train-grimace",
        help="train the grimace detector and store it in a temporal model's weights",
        description="Trains the grimace detector, a small fully convolutional network over each whole frame at "
        "320x240 greyscale whose frame score is a soft maximum over positions, so it finds the face itself and "
        "learns from per-frame grimace labels alone, on DIR in the clip dataset format (DIR/train + DIR/val, else a "
        "stable split by clip id). Seeded and counted in steps (batches of 32 frames, half grimacing); the first "
        "--plain-steps see the frames as they are, the rest are augmented (rotation, zoom, shift, brightness, "
        "gamma, noise; see --augmentation); the weights with the best validation F1 (checked every 1000 steps) are "
        "kept. They are "
        "written into --weights (a model.pt of icu train, updated in place, and the .json beside it) with the "
        "grimace decision rule fitted again on the validation clips; icu infer and icu eval then take grimace from "
        "the detector. About 25 minutes for the default 8000 steps on two CPU cores, loading the clips included. "
        "Trained on synthetic data; not clinically validated.",
    )
    twitch = commands.add_parser(
        "train-twitch",
        help="train the twitch detector and store it in a temporal model's weights",
        description="Trains the twitch detector, a small fully convolutional network over five consecutive frames "
        "at 320x240 greyscale (a frame and its differences from the two frames before and the two after) that scores "
        "the middle frame, with a soft maximum over positions, so it finds the jerking limb itself and learns from "
        "per-frame twitch labels alone, on DIR in the clip dataset format (DIR/train + DIR/val, else a stable split "
        "by clip id). Its samples are every twitching frame, every 10th frame of the rest and the two frames either "
        "side of each twitching one. Seeded and counted in steps (batches of 32 samples, half twitching); the first "
        "--plain-steps see the frames as they are (by default all of them), any after are augmented (rotation, zoom, "
        "shift, brightness, gamma, noise, or see --augmentation; the same geometry and light for the five frames of a "
        "sample); the weights "
        "with the best validation F1 (checked every 1000 steps) are kept. They are written into --weights (a "
        "model.pt of icu train, updated in place, and the .json beside it) with the twitch decision rule fitted "
        "again on the validation clips; icu infer and icu eval then take twitch from the detector. About 20 minutes "
        "for the default 4000 steps on two CPU cores, loading included. The packaged weights carry none (see "
        "MODEL_CARD.md). Trained on synthetic data; not clinically validated.",
    )
    for detector, finding, steps, plain in ((grimace, "grimace", 8000, 2000), (twitch, "twitch", 4000, 4000)):
        detector.add_argument("--data", type=Path, required=True, help=f"clip directory labelling {finding}")
        detector.add_argument("--weights", type=Path, required=True, help="model.pt to add the detector to (in place)")
        detector.add_argument(
            "--steps", type=int, help=f"training steps (default {steps}; at least a given --plain-steps)"
        )
        detector.add_argument(
            "--plain-steps", type=int, help=f"steps without augmentation first (default {plain}, at most --steps)"
        )
        detector.add_argument("--seed", type=int, help="random seed (default 0)")
        detector.add_argument(
            "--validate-augmented",
            action="store_true",
            help="also score the validation clips under one fixed draw of the augmentation (--augmentation's) at "
            "every check of an augmented step, and keep the step with the best mean of the two F1s rather than the "
            "best F1 on the clips as they are: validation clips share the training clips' look, so alone they favour a "
            "detector that has learnt that look. Each check then takes three to five times as long (the twitch "
            "detector's on two CPU cores: 50 s as they are, then 190 s under the full augmentation, 120 s under "
            "distance)",
        )
        detector.add_argument(
            "--augmentation",
            choices=("full", "distance"),
            help="what the augmented steps (and --validate-augmented) change: full, the camera's angle, zoom and "
            "shift, the light and sensor noise (default); distance, only the camera nearer or farther (zoom "
            "0.7-1.3x, a small shift, a mirror image), which leaves the size of a movement the only thing changed",
        )
        _add_clip_job_flags(detector)
        detector.set_defaults(handler=_cmd_train_detector, finding=finding)
    twitch.add_argument(
        "--align-px",
        type=int,
        default=0,
        help="carry each neighbour onto the scored frame by the camera's global shift, measured by phase "
        "correlation, up to this many pixels at 320x240, before differencing, so that a shaking camera is not read "
        "as jerks everywhere; stored with the detector and applied wherever it runs (default 0: off)",
    )
    _add_research_parsers(commands, evaluation)
    _add_sim_parser(commands)
    _add_news2_parser(commands)
    _add_dashboard_parser(commands, bench)
    _add_demo_parser(commands)
    return parser


def _add_demo_parser(commands: Any) -> None:
    from demo.cli import add_demo_parser

    add_demo_parser(commands)


def _add_news2_parser(commands: Any) -> None:
    news2 = commands.add_parser(
        "news2",
        help="score one set of vital signs with NEWS2 and print JSON",
        description="NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017). Prints one JSON "
        'object: {"score": aggregate, "risk": "low"|"low-medium"|"medium"|"high", "parameters": {name: points}, '
        '"complete": bool, "red_parameters": [names scoring 3]}. Every flag is optional: a missing parameter is '
        'scored as absent (left out of "parameters", "complete": false, the score a lower bound); give --oxygen '
        "or --air to score air or oxygen. Values between the chart's printed limits score as the band above "
        "(RR 20.5 as 21, 35.05 C as 35.1). Risk: 7+ high, 5-6 medium, a single parameter scoring 3 low-medium, "
        "else low. Impossible values exit with status 2.",
    )
    news2.add_argument("--rr", type=float, help="respiration rate, breaths/min (0-100)")
    news2.add_argument("--spo2", type=float, help="SpO2, %% (0-100)")
    news2.add_argument(
        "--scale",
        type=int,
        choices=(1, 2),
        default=1,
        help="SpO2 scale: 2 only when prescribed (target 88-92%%, e.g. hypercapnic respiratory failure; default 1)",
    )
    oxygen = news2.add_mutually_exclusive_group()
    oxygen.add_argument(
        "--oxygen", dest="on_oxygen", action="store_true", default=None, help="on supplemental oxygen (2 points)"
    )
    oxygen.add_argument(
        "--air", dest="on_oxygen", action="store_false", default=None, help="breathing room air (0 points)"
    )
    news2.add_argument("--sbp", type=float, help="systolic blood pressure, mmHg (0-300)")
    news2.add_argument("--hr", type=float, help="pulse, beats/min (0-300)")
    news2.add_argument(
        "--consciousness", metavar="A|C|V|P|U", help="ACVPU, any case: Alert, new Confusion, Voice, Pain, Unresponsive"
    )
    news2.add_argument("--temp", type=float, help="temperature, degrees Celsius (20-45)")
    news2.set_defaults(handler=_cmd_news2)


def _add_sim_parser(commands: Any) -> None:

    sim = commands.add_parser(
        "sim",
        help="the synthetic bedside world: scenarios, labelled clips, a live simulated ward",
        description="Scenario-driven synthetic patients: video with ground truth for training and evaluation, "
        "and live beds that publish vitals and camera frames to Kafka. Synthetic data only.",
    ).add_subparsers(dest="sim_command", metavar="ACTION", required=True)

    scenarios = sim.add_parser("scenarios", help="list the scenario library")
    scenarios.set_defaults(handler=_cmd_sim_scenarios)

    validate = sim.add_parser("validate", help="check scenario files (YAML or JSON); errors name the field")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(handler=_cmd_sim_validate)

    clips = sim.add_parser(
        "clips",
        help="write a labelled clip set (<id>.mp4 + <id>.json per clip)",
        description="Writes N clips in the clip dataset format (see README). Without --scenario each clip is a "
        "random mix of findings and nuisances on a new patient; with --scenario the named scenarios are cycled "
        "over new patients (--duration is then ignored). The same --seed gives the same labels, byte for byte.",
    )
    clips.add_argument("--out", type=Path, required=True, help="output folder (created)")
    clips.add_argument("--n", type=int, required=True, help="number of clips")
    clips.add_argument("--seed", type=int, required=True, help="seed of the whole set")
    clips.add_argument("--duration", type=float, default=30.0, help="seconds per random clip (default 30)")
    clips.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    clips.add_argument("--size", default="320x240", help="WIDTHxHEIGHT, both even (default 320x240)")
    clips.add_argument(
        "--split",
        choices=["train", "val", "test", "unseen"],
        default="train",
        help="train/val/test share appearance ranges; unseen uses ranges train never has (default train)",
    )
    clips.add_argument("--scenario", action="append", metavar="NAME|FILE", help="library name or file; repeatable")
    clips.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    clips.set_defaults(handler=_cmd_sim_clips)

    ward = sim.add_parser(
        "ward",
        help="run live simulated beds: vitals -> <prefix>.vitals, camera frames -> <prefix>.frames",
        description="Each bed runs one scenario (cycled from --scenario, default a mixed ward) and loops it. "
        "Vitals at 1 Hz and JPEG frames with the frames contract's headers go to Kafka; timestamps follow "
        "simulated time. Video is latest-frame-wins: frames that cannot be rendered or sent in time are "
        "skipped and counted, never queued. Ctrl-C / SIGTERM stops after flushing.",
    )
    _add_kafka_flags(ward)
    ward.add_argument("--beds", type=int, help=_env("number of beds", "ICU_SIM_BEDS", 8))
    ward.add_argument("--scenario", action="append", metavar="NAME|FILE", help="scenario per bed, cycled; repeatable")
    ward.add_argument("--speed", type=float, help=_env("simulated seconds per second", "ICU_SIM_SPEED", 1))
    ward.add_argument("--fps", type=float, help=_env("camera frames per simulated second", "ICU_SIM_FPS", 10))
    ward.add_argument("--size", help=_env("frame size WIDTHxHEIGHT", "ICU_SIM_SIZE", "320x240"))
    ward.add_argument("--seed", type=int, help=_env("seed of patients and courses", "ICU_SIM_SEED", 0))
    ward.add_argument("--duration", type=float, help="stop after this many simulated seconds (default: run on)")
    ward.add_argument("--truth", type=Path, help="append each bed's ground-truth events (JSON Lines) to this file")
    ward.set_defaults(handler=_cmd_sim_ward)

    vitals = sim.add_parser("vitals", help="print a scenario's monitor readings as JSON Lines (vitals contract)")
    vitals.add_argument("--scenario", required=True, metavar="NAME|FILE")
    vitals.add_argument("--seed", type=int, default=0)
    vitals.add_argument("--bed", default="sim-01", help="bed_id of the messages (default sim-01)")
    vitals.add_argument("--start", help="ISO time of the first reading, with timezone (default now)")
    vitals.set_defaults(handler=_cmd_sim_vitals)

    camera = sim.add_parser(
        "camera",
        help="a simulated WebRTC camera publishing one bed's video to a WHIP endpoint",
        description="Renders a scenario in real time and publishes it over WebRTC to a WHIP endpoint (RFC 9725), "
        "like a bedside camera: POST offer, media, DELETE on exit (Ctrl-C) or at the scenario's end. The bearer "
        "token comes from ICU_SIM_WHIP_TOKEN.",
    )
    camera.add_argument("--whip", required=True, help="endpoint URL, e.g. http://127.0.0.1:8080/whip/icu1-01")
    camera.add_argument("--scenario", default="stable", metavar="NAME|FILE", help="scenario (default stable)")
    camera.add_argument("--seed", type=int, default=0, help="patient seed (default 0)")
    camera.add_argument("--fps", type=float, default=10.0, help="camera frame rate (default 10)")
    camera.add_argument("--duration", type=float, help="stop after this many seconds (default: the scenario's end)")
    camera.add_argument(
        "--ice-address", action="append", help="offer only this local address as ICE candidate (repeatable)"
    )
    camera.set_defaults(handler=_cmd_sim_camera)

    sheet = sim.add_parser("contact-sheet", help="render a PNG of frames across findings, nuisances and patients")
    sheet.add_argument("--out", type=Path, default=Path("docs/sim-contact-sheet.png"), help="PNG path")
    sheet.add_argument("--scale", type=float, default=0.5, help="shrink factor of the whole sheet (default 0.5)")
    sheet.set_defaults(handler=_cmd_sim_sheet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    from infra.errors import InfraError

    try:
        return handler(args)
    except (ConfigError, InfraError) as exc:
        print(f"icu {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except (SimulatorError, IngestError, ResearchError) as exc:
        print(f"icu {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader left, which is not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

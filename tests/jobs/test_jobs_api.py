"""The fine-tuning jobs API driven by the official openai client against a live server."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import DEMO, demo_rows, running, wait_for

pytestmark = pytest.mark.timeout(120)


def test_upload_train_and_chat_with_the_result(jobs_server, train_file):
    _, client = jobs_server()
    with open(train_file, "rb") as fh:
        f = client.files.create(file=fh, purpose="fine-tune")
    assert f.object == "file" and f.purpose == "fine-tune" and f.bytes == train_file.stat().st_size
    assert client.files.retrieve(f.id).filename == "train.jsonl"
    assert f.id in {x.id for x in client.files.list(purpose="fine-tune")}
    assert client.files.content(f.id).read() == train_file.read_bytes()

    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=f.id,
        suffix="support",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}},
        },
    )
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.method.type == "supervised" and job.seed == 7

    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:support:{job.id.split('-')[1][:8]}"
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10)]

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"  # newest first, as OpenAI
    assert messages[-1] == f"Created fine-tuning job: {job.id}"
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert len(metrics) == 8  # 16 rows / batch 4 × 2 epochs, logged every step
    assert all(e.data["total_steps"] == 8 for e in metrics)

    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [8, 6, 4, 2]  # newest first
    assert ckpts[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-8"
    assert ckpts[0].metrics.train_loss is not None

    # the result file holds the step metrics
    (res,) = done.result_files
    csv_text = client.files.content(res).read().decode()
    assert csv_text.splitlines()[0] == "step,epoch,train_loss,valid_loss,learning_rate"
    assert len(csv_text.splitlines()) == 1 + 8

    # servable at once, under its ft: name, and different from the base model
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    msgs = [{"role": "user", "content": demo_rows(1)[0]["messages"][0]["content"]}]
    tuned = client.chat.completions.create(model=done.fine_tuned_model, messages=msgs, max_tokens=8)
    base = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8)
    assert tuned.model == done.fine_tuned_model
    assert tuned.choices[0].message.content != base.choices[0].message.content

    # training files are larger than chat requests: uploads have their own size limit (1 MiB for the rest)
    row = (json.dumps(demo_rows(1)[0]) + "\n").encode()
    big = client.files.create(file=("big.jsonl", row * (1_500_000 // len(row))), purpose="fine-tune")
    assert big.bytes > 1 << 20
    assert client.files.delete(big.id).deleted and big.id not in {x.id for x in client.files.list()}


def test_a_bad_file_fails_the_job_naming_its_bad_lines(jobs_server, tmp_path):
    import openai

    url, client = jobs_server()
    rows = [json.dumps(r) for r in demo_rows(6)]
    rows[1] = '{"messages": [{"role": "user", "content": "hi"}'  # line 2: not JSON
    rows[4] = json.dumps(
        {
            "messages": [
                {"role": "robot", "content": "beep"},  # line 5: bad role
                {"role": "assistant", "content": "ok"},
            ]
        }
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(rows) + "\n")
    f = client.files.create(file=bad.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    done = wait_for(client, job.id)
    assert done.status == "failed" and done.fine_tuned_model is None
    assert done.error.code == "invalid_training_file" and done.error.param == "training_file"
    assert "2 invalid line(s) (2, 5)" in done.error.message
    assert "line 2: invalid_json" in done.error.message and "line 5, field 'messages[0].role'" in done.error.message
    assert "bad.jsonl" in done.error.message
    assert [e.level for e in client.fine_tuning.jobs.list_events(job.id)][0] == "error"

    # cursor pagination (newest first), as the client's auto-paging expects
    first = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first.data) == 2 and first.has_more
    rest = client.fine_tuning.jobs.list_events(job.id, limit=10, after=first.data[-1].id)
    assert [e.message for e in first.data][1:] == [f"Validating training file: {f.id}"]
    assert [e.message for e in rest.data] == [f"Created fine-tuning job: {job.id}"] and not rest.has_more
    paged = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=1)]  # auto-paging walks every page
    assert paged == [e.id for e in first.data + rest.data]

    # errors at creation and upload use OpenAI's shape and name the parameter
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="gpt-4o", training_file=f.id)
    assert e.value.code == "model_not_available" and e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="tiny", training_file="file-nope")
    assert e.value.param == "training_file"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(
            model="tiny",
            training_file=f.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
        )
    assert "n_epochs" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("data.csv", b"a,b\n"), purpose="fine-tune")
    assert e.value.code == "invalid_file_format"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).fine_tuning.jobs.list()


def test_cancel_stops_a_running_job(jobs_server, tmp_path):
    _, client = jobs_server()
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_rows(48)))
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=f.id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_for(client, job.id, ("running",))
    # wait until training steps are logged, then cancel mid-training
    import time

    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=5)):
        time.sleep(0.05)
    import openai

    with pytest.raises(openai.ConflictError) as e:  # a running job still needs its file
        client.files.delete(f.id)
    assert e.value.code == "file_in_use" and job.id in e.value.message
    out = client.fine_tuning.jobs.cancel(job.id)
    assert out.status == "cancelled"

    # the worker stops training at its next step and says so; nothing is trained after that
    deadline = time.monotonic() + 30
    while not (
        stopped := [
            e for e in client.fine_tuning.jobs.list_events(job.id, limit=5) if e.message.startswith("Training stopped")
        ]
    ):
        assert time.monotonic() < deadline, "the worker did not stop the cancelled job"
        time.sleep(0.05)
    at = stopped[0].data["step"]
    assert 0 < at < 48 * 50
    # it trained in a process of its own, which has ended by the time the job says it stopped
    [pid] = [e.data["pid"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if (e.data or {}).get("pid")]
    assert pid != os.getpid() and not running(pid)
    time.sleep(0.3)
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert max(steps) <= at
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    # a finished job cannot be cancelled again
    with pytest.raises(openai.ConflictError) as e:
        client.fine_tuning.jobs.cancel(job.id)
    assert e.value.code == "job_not_cancellable"


def test_dpo_method_trains_on_preference_pairs(jobs_server, tmp_path):
    from tuneforge.run import RunDir

    _, client = jobs_server()
    pairs = [json.loads(line) for line in (DEMO / "preference.jsonl").read_text().splitlines()[:8]]
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"messages": [{"role": "user", "content": p["prompt"]}]},
                    "preferred_output": [{"role": "assistant", "content": p["chosen"]}],
                    "non_preferred_output": [{"role": "assistant", "content": p["rejected"]}],
                }
            )
            + "\n"
            for p in pairs
        )
    )  # OpenAI's DPO format
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 1, "batch_size": 4}}}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id, method=method, suffix="pref")
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.25
    run = RunDir(tmp_path / "jobs" / "runs" / job.id)
    recipe = run.recipe()
    assert recipe.objective.kind == "dpo" and recipe.objective.beta == 0.25
    assert run.manifest()["stages"]["train"]["steps"] == 2  # 8 pairs / batch 4 × 1 epoch
    assert done.fine_tuned_model in {m.id for m in client.models.list()}

    # chat rows cannot train DPO: the job fails at validation and says what the method needs
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in demo_rows(4)))
    f2 = client.files.create(file=chat.open("rb"), purpose="fine-tune")
    bad = wait_for(client, client.fine_tuning.jobs.create(model="tiny", training_file=f2.id, method=method).id)
    assert bad.status == "failed" and "method 'dpo' needs preference pairs" in bad.error.message

//! Sharded sweeps: item lists dealt to shards, and a causal trace of real facts on Gemma 3 270M run as a real Slurm
//! job array (scripts/slurm.sh starts a one-node cluster; scripts/test.sh does so and exports SLURM_CONF) whose
//! merge is byte for byte the single-process trace, through a cancelled and resubmitted task, with bad inputs
//! refused and nothing finished lost.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use vene_host::sharding::ShardSpec;

use crate::common::*;

/// Every item lands in exactly one shard, shards differ by at most one item, for any count (also above the number
/// of items), and the index comes from Slurm or Kubernetes with `auto`.
#[test]
fn shards_deal_every_item_exactly_once() {
    for items in 0..=13 {
        for count in 1..=17 {
            let mut seen = vec![0; items];
            let mut sizes = Vec::new();
            for index in 0..count {
                let spec = ShardSpec::parse(&format!("{index}/{count}")).unwrap();
                let positions = spec.positions(items);
                for &p in &positions {
                    assert!(spec.owns(p), "{spec} lists {p} but does not own it");
                    seen[p] += 1;
                }
                assert_eq!(positions.len(), (0..items).filter(|&p| spec.owns(p)).count());
                sizes.push(positions.len());
            }
            assert!(seen.iter().all(|&n| n == 1), "{items} items in {count} shards: {seen:?}");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{items} items in {count} shards: sizes {sizes:?}");
        }
    }
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    };
    let slurm = ShardSpec::parse_with("auto/4", env(&[("SLURM_ARRAY_TASK_ID", "2")])).unwrap();
    assert_eq!(slurm, ShardSpec { index: 2, count: 4 });
    let kubernetes = ShardSpec::parse_with("auto/3", env(&[("JOB_COMPLETION_INDEX", "0")])).unwrap();
    assert_eq!(kubernetes, ShardSpec { index: 0, count: 3 });
    for (text, variables, expected) in [
        ("4/4", &[][..], "the shard index 4 is not below the shard count 4"),
        ("0/0", &[][..], "the shard count must be at least 1"),
        ("2", &[][..], "there is no '/'"),
        ("x/4", &[][..], "the shard index \"x\" is not a number"),
        ("auto/4", &[][..], "none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX is set"),
        ("auto/2", &[("SLURM_ARRAY_TASK_ID", "5")][..], "the shard index 5 is not below the shard count 2"),
    ] {
        let pairs: Vec<(String, String)> = variables.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let variable = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let error = ShardSpec::parse_with(text, variable).unwrap_err().to_string();
        assert!(error.contains(expected), "--shard {text}: {error}");
        assert!(error.contains("valid: I/N"), "--shard {text} says what is valid: {error}");
    }
}

/// Eight facts: shards 0–2 trace two known facts each, shard 3 holds the two the model does not know.
const FACTS: &str = r#"{"prompt": "The yen is the currency of", "subject": "The yen", "target": " Japan"}
{"prompt": "Tiger Woods plays the sport of", "subject": "Tiger Woods", "target": " golf"}
{"prompt": "Larry Page is a co-founder of", "subject": "Larry Page", "target": " Google"}
{"prompt": "The yen is the currency of", "subject": "The yen", "target": " France"}
{"prompt": "Babe Ruth played the sport of", "subject": "Babe Ruth", "target": " baseball"}
{"prompt": "The iPhone is a product made by", "subject": "The iPhone", "target": " Apple"}
{"prompt": "The Mustang is a car made by", "subject": "The Mustang", "target": " Ford"}
{"prompt": "Big Ben is located in the city of", "subject": "Big Ben", "target": " Paris"}
"#;

const OUTPUTS: [&str; 4] = ["trace.json", "block_output.svg", "mlp_output.svg", "attention_output.svg"];

fn vene(args: &[&str]) -> Output {
    Command::new(vene_binary()).args(args).env("VENE_THREADS", "1").output().expect("vene runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn succeeds(args: &[&str]) -> String {
    let output = vene(args);
    assert!(output.status.success(), "vene {}: {}", args.join(" "), text(&output));
    text(&output)
}

fn fails_with(args: &[&str], expected: &[&str]) {
    let output = vene(args);
    let said = text(&output);
    assert!(!output.status.success(), "vene {} should fail: {said}", args.join(" "));
    for part in expected {
        assert!(said.contains(part), "vene {}: expected {part:?} in: {said}", args.join(" "));
    }
    assert!(!said.contains("panicked"), "a clean error, not a panic: {said}");
}

/// The ids in Slurm's queue, one array task a line (`12_3`).
fn queued() -> Vec<String> {
    let output = Command::new("squeue").args(["--noheader", "--array", "--format=%i"]).output().expect("squeue");
    String::from_utf8_lossy(&output.stdout).lines().map(|l| l.trim().to_string()).collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number after `label` in `said`.
fn job_id(said: &str, label: &str) -> String {
    let rest = &said[said.find(label).unwrap_or_else(|| panic!("{label:?} in {said}")) + label.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect()
}

fn item_files(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out.join("shards/items"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_same_outputs(single: &Path, merged: &Path) {
    for name in OUTPUTS {
        let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(merged.join(name)).unwrap());
        assert!(a == b, "{name}: the merged file differs from the single-process one");
    }
}

#[test]
fn slurm_array_merge_is_the_single_process_trace() {
    assert!(
        std::env::var_os("SLURM_CONF").is_some() && jobs_on_path(),
        "this test needs a Slurm cluster: run `scripts/slurm.sh start DIR` and export SLURM_CONF=DIR/slurm.conf \
         (scripts/test.sh does both)"
    );
    let model = vene_host::real_model::gemma3_270m().unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().unwrap();
    let dir = scratch("sharding");
    let facts = dir.join("facts.jsonl");
    std::fs::write(&facts, FACTS).unwrap();
    let facts = facts.to_str().unwrap();
    let (single, out) = (dir.join("single"), dir.join("sharded"));
    let trace = |out: &Path| -> Vec<String> {
        ["trace", "--model", model, "--facts", facts, "--samples", "1", "--out", out.to_str().unwrap()]
            .map(String::from)
            .to_vec()
    };
    // The single-process trace runs beside the cluster's tasks, with the one thread each task gets.
    let mut reference = Command::new(vene_binary())
        .args(trace(&single))
        .env("VENE_THREADS", "1")
        .stdout(Stdio::null())
        .spawn()
        .expect("vene runs");

    let mut submit: Vec<String> =
        ["slurm", "--array", "4", "--cpus-per-task", "1", "--", "vene"].map(String::from).to_vec();
    submit.extend(trace(&out));
    let submit: Vec<&str> = submit.iter().map(String::as_str).collect();
    let said = succeeds(&submit);
    let (array, merge) = (job_id(&said, "array job "), job_id(&said, "the merge as job "));
    let script = std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3") && script.contains("#SBATCH --requeue"), "{script}");
    assert!(script.contains("--shard auto/4"), "{script}");

    // Shard 0 (facts 0 and 4) is cancelled once its first fact is stored, mid-way through its second.
    let first = out.join("shards/items/fact-0000.json");
    wait_for("shard 0's first fact", Duration::from_secs(600), || first.exists());
    assert!(Command::new("scancel").arg(format!("{array}_0")).status().unwrap().success());
    wait_for("the array's tasks to leave the queue", Duration::from_secs(900), || {
        !queued().iter().any(|id| id.starts_with(&format!("{array}_")))
    });
    assert!(!out.join("shards/items/fact-0004.json").exists(), "shard 0 was cancelled before its second fact");
    assert!(queued().contains(&merge), "the merge waits on the cancelled task: {:?}", queued());
    let status = succeeds(&["slurm", "status", out.to_str().unwrap()]);
    for line in ["7/8 items", "shard 0/4: not running (1/2 items)", "shard 1/4: done (2/2 items)", "shard 3/4: done"] {
        assert!(status.contains(line), "status shows {line:?}: {status}");
    }
    fails_with(
        &["merge", out.to_str().unwrap()],
        &["1 of the sweep's 8 items are not finished", "shard 0/4 (fact-0004)"],
    );

    // Submitting again runs only shard 0, skipping its stored fact, and replaces the merge that can no longer run.
    let said = succeeds(&submit);
    assert!(said.contains("submitted shards 0 of 4"), "{said}");
    let merge = job_id(&said, "the merge as job ");
    assert!(std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap().contains("#SBATCH --array=0\n"));
    wait_for("the merge job", Duration::from_secs(900), || !queued().contains(&merge));
    let log = std::fs::read_to_string(out.join("slurm/logs/shard-0.log")).unwrap();
    assert!(log.contains("shard 0/4: computed 1 items, 1 were already stored"), "{log}");
    let expected: Vec<String> = (0..8).map(|i| format!("fact-{i:04}.json")).collect();
    assert_eq!(item_files(&out), expected, "one whole file per fact, no temporaries");
    assert!(reference.wait().unwrap().success(), "the single-process trace runs");
    assert_same_outputs(&single, &out);
    let status = succeeds(&["slurm", "status", out.to_str().unwrap()]);
    assert!(status.contains("8/8 items") && status.contains("shard 0/4: done (2/2 items)"), "{status}");

    refuses_what_does_not_belong(&dir, &out, &single, model, facts);
}

/// A shard of other options, a shard run against another model, a truncated item and bad --shard values are each
/// refused with the reason, and nothing finished is lost.
fn refuses_what_does_not_belong(dir: &Path, out: &Path, single: &Path, model: &str, facts: &str) {
    let out_str = out.to_str().unwrap();
    let shard = |model: &str, out: &str, samples: &str, shard: &str| -> Vec<String> {
        ["trace", "--model", model, "--facts", facts, "--samples", samples, "--out", out, "--shard", shard]
            .map(String::from)
            .to_vec()
    };
    let run_fails = |args: Vec<String>, expected: &[&str]| {
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    };
    run_fails(shard(model, out_str, "1", "4/4"), &["--shard 4/4", "not below the shard count 4", "valid: I/N"]);
    run_fails(shard(model, out_str, "1", "0/0"), &["--shard 0/0", "at least 1"]);
    run_fails(shard(model, out_str, "1", "0/3"), &["the shard count: 4 in the manifest, 3 in this run"]);
    let gpt2 = gpt2_dir().to_string_lossy().into_owned();
    run_fails(shard(&gpt2, out_str, "1", "1/4"), &["describes another sweep", "the model's sha256"]);

    // Shard 3 (the two facts the model does not know: cheap) computed with 2 noise samples elsewhere, copied in.
    let elsewhere = dir.join("elsewhere");
    let args = shard(model, elsewhere.to_str().unwrap(), "2", "3/4");
    succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let item = out.join("shards/items/fact-0003.json");
    let kept = std::fs::read(&item).unwrap();
    std::fs::copy(elsewhere.join("shards/items/fact-0003.json"), &item).unwrap();
    let expected = ["fact-0003.json", "belongs to another sweep", "--samples: 1 in the manifest, 2 in this item"];
    fails_with(&["merge", out_str], &expected);
    std::fs::write(&item, &kept).unwrap();

    let truncated = out.join("shards/items/fact-0001.json");
    let whole = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    fails_with(&["merge", out_str], &["fact-0001.json is truncated or damaged", "delete it and rerun its shard"]);
    assert_same_outputs(single, out);
    assert_eq!(item_files(out).len(), 8, "the other items are kept");
    std::fs::write(&truncated, &whole).unwrap();
    succeeds(&["merge", out_str]);
    assert_same_outputs(single, out);
}

fn jobs_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir: PathBuf| dir.join("sbatch").is_file() && dir.join("squeue").is_file())
    })
}

/// `vene das-probe`, `vene interchange-search` and `vene steer-sentiment` sharded over their items (the fixture GPT-2 with a word
/// tokenizer): the merge equals the single-process result byte for byte, a rerun of a finished shard computes nothing, and `vene slurm`
/// without sbatch on the PATH writes the scripts and says how to submit them.
#[test]
fn cli_sweeps_merge_to_the_single_process_results() {
    let dir = scratch("sharding-das-probe");
    let model = dir.join("model");
    gpt2_with_word_tokenizer(&model);
    let (single, out) = (dir.join("single"), dir.join("sharded"));
    let args = |out: &Path| -> Vec<String> {
        let model = model.to_str().unwrap();
        let grid = ["das-probe", "--model", model, "--template", "{name} w5 w6", "--class", "w1=w10,w11,w12,w13,w14"];
        let mut args: Vec<String> = grid.map(String::from).to_vec();
        args.extend(["--class", "w2=w20,w21,w22", "--epochs", "2", "--out", out.to_str().unwrap()].map(String::from));
        args
    };
    let strs = |args: &[String]| -> Vec<String> { args.to_vec() };
    let run = |args: Vec<String>| succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&single));
    for shard in ["2/3", "0/3"] {
        let mut sharded = strs(&args(&out));
        sharded.extend(["--shard".to_string(), shard.to_string()]);
        let said = run(sharded);
        assert!(said.contains(&format!("shard {shard}: computed 3 items, 0 were already stored")), "{said}");
    }
    // Shard 1 as a Kubernetes Indexed Job's pod 1 runs it (examples/kubernetes/trace-indexed-job.yaml).
    let mut pod = args(&out);
    pod.extend(["--shard".to_string(), "auto/3".to_string()]);
    let mut command = Command::new(vene_binary());
    command.args(&pod).env("VENE_THREADS", "1").env("JOB_COMPLETION_INDEX", "1");
    let output = command.output().expect("vene runs");
    assert!(text(&output).contains("shard 1/3: computed 3 items, 0 were already stored"), "{}", text(&output));
    let mut again = args(&out);
    again.extend(["--shard".to_string(), "0/3".to_string()]);
    assert!(run(again).contains("computed 0 items, 3 were already stored"));
    succeeds(&["merge", out.to_str().unwrap()]);
    for name in ["das_probe.json", "das_iia.svg", "probe_accuracy.svg"] {
        let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
        assert!(a == b, "{name}: the merged file differs from the single-process one");
    }

    interchange_search_shards_merge_to_the_single_process_search(&dir, &model);
    steer_sentiment_shards_merge_to_the_single_process_study(&dir, &model);
    path_patch_shards_merge_to_the_single_process_study(&dir, &model);
    attribute_shards_merge_to_the_single_process_estimates(&dir, &model);

    let mut submit: Vec<String> = ["slurm", "--array", "3", "--", "vene"].map(String::from).to_vec();
    submit.extend(args(&dir.join("unsubmitted")));
    let output = Command::new(vene_binary()).args(&submit).env("PATH", "/nonexistent").output().expect("vene runs");
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("sbatch is not on the PATH") && said.contains("--dependency=afterok:$id"), "{said}");
    let script = std::fs::read_to_string(dir.join("unsubmitted/slurm/array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-2") && script.contains("das-probe"), "{script}");
    fails_with(&["slurm", "--array", "0", "--", "vene", "das-probe"], &["--array 0", "at least one shard"]);
    fails_with(
        &["slurm", "--array", "2", "--", "vene", "sites"],
        &["is not a sweep vene can shard", "vene trace --facts"],
    );
    let typo = ["slurm", "--array", "2", "--", "vene", "das-probe", "--model", "m", "--template", "{name} w5"];
    let typo: Vec<&str> = typo.into_iter().chain(["--class", "w1=w2", "--out", "x", "--epoch", "2"]).collect();
    fails_with(&typo, &["not a valid vene command", "--epoch"]);
    assert!(!Path::new("x").exists(), "nothing is written for a command that does not parse");
}

/// `vene interchange-search` sharded over its wording × layer items merges to the single-process search.
fn interchange_search_shards_merge_to_the_single_process_search(dir: &Path, model: &Path) {
    let wordings = dir.join("wordings.jsonl");
    std::fs::write(
        &wordings,
        "{\"base\": \"w1 w2 w3 w4\", \"attribute_source\": \"w1 w5 w3 w4\", \"entity_source\": \"w1 w2 w6 w4\"}\n\
         {\"base\": \"w8 w2 w3\", \"attribute_source\": \"w8 w9 w3\", \"entity_source\": \"w8 w2 w10\"}\n",
    )
    .unwrap();
    let (single, out) = (dir.join("search-single"), dir.join("search-sharded"));
    let args = |out: &Path, shard: Option<&str>| -> Vec<String> {
        let (model, wordings) = (model.to_str().unwrap(), wordings.to_str().unwrap());
        let mut args: Vec<String> = ["interchange-search", "--model", model, "--wordings", wordings, "--target", "w7"]
            .map(String::from)
            .to_vec();
        args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        args.extend(shard.map(|s| ["--shard".to_string(), s.to_string()]).into_iter().flatten());
        args
    };
    let run = |args: Vec<String>| succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&single, None));
    assert!(run(args(&out, Some("1/2"))).contains("shard 1/2: computed 3 items"));
    fails_with(&["merge", out.to_str().unwrap()], &["3 of the sweep's 6 items are not finished", "shard 0/2"]);
    assert!(run(args(&out, Some("0/2"))).contains("6 of the sweep's 6 items are finished"));
    succeeds(&["merge", out.to_str().unwrap()]);
    let name = "interchange_search.json";
    let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
    assert!(a == b, "{name}: the merged file differs from the single-process one");
}

/// `vene steer-sentiment` sharded over its continuations merges to the single-process study.
fn steer_sentiment_shards_merge_to_the_single_process_study(dir: &Path, model: &Path) {
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (openings, positive, negative) =
        (file("openings.txt", "w1 w2 w3\nw8 w9\n"), file("positive.txt", "w4\n"), file("negative.txt", "w5\n"));
    let (single, out) = (dir.join("steer-single"), dir.join("steer-sharded"));
    let args = |out: &Path, shard: Option<&str>| -> Vec<String> {
        let mut args: Vec<String> =
            ["steer-sentiment", "--model", model.to_str().unwrap(), "--openings", &openings].map(String::from).to_vec();
        let rest = ["--positive", &positive, "--negative", &negative, "--word", "w6", "--word", "w7"];
        args.extend(rest.map(String::from));
        let rest = ["--coefficient", "1", "--sweep", "0.5,2", "--max-new-tokens", "3", "--out", out.to_str().unwrap()];
        args.extend(rest.map(String::from));
        args.extend(shard.map(|s| ["--shard".to_string(), s.to_string()]).into_iter().flatten());
        args
    };
    let run = |args: Vec<String>| succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&single, None));
    // Two openings × (unsteered + 2 words) and the sweep's 2 coefficients × 2 words: 10 continuations.
    assert!(run(args(&out, Some("0/3"))).contains("shard 0/3: computed 4 items"));
    assert!(run(args(&out, Some("2/3"))).contains("shard 2/3: computed 3 items"));
    assert!(run(args(&out, Some("1/3"))).contains("10 of the sweep's 10 items are finished"));
    succeeds(&["merge", out.to_str().unwrap()]);
    for name in ["steer_sentiment.json", "shift.svg", "sweep.svg"] {
        let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
        assert!(a == b, "{name}: the merged file differs from the single-process one");
    }
}

fn path_patch_shards_merge_to_the_single_process_study(dir: &Path, model: &Path) {
    let prompts = dir.join("ioi.jsonl");
    let lines = [
        r#"{"clean": "w5 w9 w12 w5 w40", "corrupted": "w7 w9 w30 w8 w40", "target": "w5", "distractor": "w12"}"#,
        r#"{"clean": "w3 w3 w61 w17", "corrupted": "w2 w44 w61 w90", "target": "w17", "distractor": "w3"}"#,
    ];
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let (single, out) = (dir.join("path-single"), dir.join("path-sharded"));
    let args = |out: &Path, shard: Option<&str>| -> Vec<String> {
        let mut args: Vec<String> =
            ["path-patch", "--model", model.to_str().unwrap(), "--receivers", "query"].map(String::from).to_vec();
        args.extend(["--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from));
        args.extend(shard.map(|s| ["--shard".to_string(), s.to_string()]).into_iter().flatten());
        args
    };
    let run = |args: Vec<String>| succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&single, None));
    // 3 layers × 4 heads: 12 senders.
    assert!(run(args(&out, Some("1/2"))).contains("shard 1/2: computed 6 items"));
    assert!(run(args(&out, Some("0/2"))).contains("12 of the sweep's 12 items are finished"));
    succeeds(&["merge", out.to_str().unwrap()]);
    for name in ["path_patching.json", "senders_to_receivers.svg"] {
        let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
        assert!(a == b, "{name}: the merged file differs from the single-process one");
    }
}

/// `vene attribute` sharded over chunks of one prompt each (of different lengths) merges to the single process's
/// estimates: each chunk weighted by its share of the prompts, positions past a shorter prompt zero.
fn attribute_shards_merge_to_the_single_process_estimates(dir: &Path, model: &Path) {
    let prompts = dir.join("attribute.jsonl");
    let lines = [
        r#"{"clean": "w5 w9 w12 w5 w40", "corrupted": "w7 w9 w30 w8 w40", "target": "w5", "distractor": "w12"}"#,
        r#"{"clean": "w3 w3 w61 w17", "corrupted": "w2 w44 w61 w90", "target": "w17", "distractor": "w3"}"#,
        r#"{"clean": "w8 w1 w2", "corrupted": "w6 w1 w7", "target": "w9", "distractor": "w2"}"#,
    ];
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let (single, out) = (dir.join("attribute-single"), dir.join("attribute-sharded"));
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["attribute", "--model", model.to_str().unwrap(), "--qk-fix", "--chunk", "1"].map(String::from).to_vec();
        args.extend(["--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: Vec<String>| succeeds(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&single, &["--top-k", "0", "--random-k", "0"]));
    assert!(run(args(&out, &["--shard", "1/2"])).contains("shard 1/2: computed 1 items"));
    assert!(run(args(&out, &["--shard", "0/2"])).contains("3 of the sweep's 3 items are finished"));
    succeeds(&["merge", out.to_str().unwrap()]);
    let scores = |dir: &Path| {
        let mut tensors = read_safetensors(&dir.join("attribution_scores.safetensors"));
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    };
    let (one, merged) = (scores(&single), scores(&out));
    assert_eq!(one.len(), 6, "block, attention, MLP, head outputs, queries and keys");
    for ((name, a), (other, b)) in one.iter().zip(&merged) {
        assert_eq!(name, other);
        assert!(a.abs().max().double_value(&[]) > 1e-4, "{name} has estimates to compare");
        assert_close(b, a, 1e-5, name);
    }
    let json = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("attribution.json")).unwrap()).unwrap()
    };
    let (a, b) = (json(&single), json(&out));
    assert_eq!((&a["method"], &a["prompts"]), (&b["method"], &b["prompts"]));
    assert!((a["clean"].as_f64().unwrap() - b["clean"].as_f64().unwrap()).abs() < 1e-5);
}

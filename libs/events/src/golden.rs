//! Golden fixtures: one committed `.msgpack` per event variant (and per case of a payload enum,
//! as `<Kind>.<case>`), decoded on every test run.
//! Regenerate only when adding a variant: `SEXTANT_WRITE_FIXTURES=1 cargo test -p sextant-events`.
//! Never regenerate an existing fixture to make a test pass: that would hide a broken reader.

use std::path::PathBuf;

use serde_json::json;
use uuid::Uuid;

use super::*;
use sextant_core::{FragmentKind, RawJson, RunId};

fn tenant() -> TenantId {
    TenantId(Uuid::from_u128(0x1111))
}

fn project() -> Project {
    Project {
        id: ProjectId(Uuid::from_u128(0x2222)),
        tenant_id: tenant(),
        name: "checkout-bot".into(),
        description: Some("prod traffic".into()),
        extra: json!({"metadata": {"team": "payments"}}).as_object().unwrap().clone(),
        reference_dataset_id: None,
        start_time: Timestamp(1_764_037_538_269_290),
        end_time: None,
        experiment: Default::default(),
    }
}

fn samples() -> Vec<(&'static str, Envelope)> {
    let env = |event| Envelope {
        id: Uuid::from_u128(0x3333),
        tenant: tenant(),
        at_ms: 1_764_037_538_269,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        event,
    };
    let mut post = RunFragment::new(FragmentKind::Post, RunId(Uuid::from_u128(0x4444)));
    post.trace_id = Some(post.id);
    post.dotted_order = Some("20261125T022538269290Z00000000-0000-0000-0000-000000004444".into());
    post.name = Some("parent".into());
    post.run_type = Some("chain".into());
    post.start_time = Some(Timestamp(1_764_037_538_269_290));
    post.tags = Some(vec!["prod".into()]);
    post.inputs = Some(RawJson::parse(r#"{"question":"what is 21*2?"}"#).unwrap());
    post.extra = Some(json!({"metadata": {"user_id": "u1"}}).as_object().unwrap().clone());
    post.attachments =
        vec![sextant_core::run::Attachment { name: "image".into(), mime_type: "image/png".into(), data: vec![0x89, b'P', b'N', b'G'] }];
    let mut patch = RunFragment::new(FragmentKind::Patch, post.id);
    patch.end_time = Some(Timestamp(1_764_037_539_000_000));
    patch.outputs = Some(RawJson::parse(r#"{"answer":42}"#).unwrap());
    patch.error = Some("ValueError('boom')".into());
    vec![
        ("RunsIngestedV1", env(Event::RunsIngestedV1(RunsIngestedV1 { project_id: project().id, fragments: vec![post, patch] }))),
        (
            "RunsCompletedV1",
            env(Event::RunsCompletedV1(RunsCompletedV1 {
                project_id: project().id,
                runs: vec![
                    CompletedRun { id: RunId(Uuid::from_u128(0x4444)), reference_example_id: Some(Uuid::from_u128(0x6666)) },
                    CompletedRun { id: RunId(Uuid::from_u128(0x7777)), reference_example_id: None },
                ],
            })),
        ),
        ("ProjectCreatedV1", env(Event::ProjectCreatedV1(ProjectCreatedV1 { project: project() }))),
        (
            "ProjectUpdatedV1",
            env(Event::ProjectUpdatedV1(ProjectUpdatedV1 {
                project_id: project().id,
                patch: ProjectPatch {
                    name: Some("renamed".into()),
                    description: None,
                    extra: None,
                    end_time: Some(Some(Timestamp(1_764_037_600_000_000))),
                },
            })),
        ),
        ("ProjectDeletedV1", env(Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: project().id }))),
        (
            "RunShareChangedV1",
            env(Event::RunShareChangedV1(RunShareChangedV1 {
                run_id: RunId(Uuid::from_u128(0x4444)),
                share: Some(sextant_core::RunShare {
                    run_id: RunId(Uuid::from_u128(0x4444)),
                    token: Uuid::from_u128(0x5858),
                    created_at: Timestamp(1_764_037_538_269_290),
                }),
            })),
        ),
        ("RunShareChangedV1.unshared", env(Event::RunShareChangedV1(RunShareChangedV1 { run_id: RunId(Uuid::from_u128(0x4444)), share: None }))),
        (
            "FeedbackPartReceivedV1",
            env(Event::FeedbackPartReceivedV1(FeedbackPartReceivedV1 {
                feedback_id: Uuid::from_u128(0x5555),
                json: RawJson::parse(r#"{"key":"user_rating","score":0.2}"#).unwrap(),
            })),
        ),
        (
            "FeedbackChangedV1",
            env(Event::FeedbackChangedV1(FeedbackChangedV1 {
                change: sextant_core::FeedbackChange::Patch {
                    id: sextant_core::FeedbackId(Uuid::from_u128(0x5555)),
                    fields: vec![
                        sextant_core::feedback::FeedbackField::Score(Some(sextant_core::feedback::Score::Number(0.25))),
                        sextant_core::feedback::FeedbackField::Score(Some(sextant_core::feedback::Score::Bool(true))),
                        sextant_core::feedback::FeedbackField::Comment(None),
                        sextant_core::feedback::FeedbackField::Correction(Some(RawJson::parse(r#"{"answer":"42"}"#).unwrap())),
                    ],
                    modified_at: Timestamp(1_764_037_600_000_000),
                },
            })),
        ),
        (
            "FeedbackTokenIssuedV1",
            env(Event::FeedbackTokenIssuedV1(FeedbackTokenIssuedV1 {
                token: sextant_core::feedback::FeedbackToken {
                    id: Uuid::from_u128(0x5656),
                    run_id: RunId(Uuid::from_u128(0x4444)),
                    key: "user_vote".into(),
                    feedback_id: sextant_core::FeedbackId(Uuid::from_u128(0x5757)),
                    expires_at: Timestamp(1_764_048_338_269_290),
                    created_at: Timestamp(1_764_037_538_269_290),
                    feedback_config: Some(RawJson::parse(r#"{"type":"continuous","min":0,"max":1}"#).unwrap()),
                },
            })),
        ),
        (
            "FeedbackConfigChangedV1",
            env(Event::FeedbackConfigChangedV1(FeedbackConfigChangedV1 {
                config: sextant_core::feedback::FeedbackConfigDef {
                    id: Uuid::from_u128(0x5858),
                    key: "user_rating".into(),
                    config: RawJson::parse(r#"{"type":"continuous","min":0.0,"max":5.0}"#).unwrap(),
                    is_lower_score_better: Some(false),
                    is_enforced: false,
                    deleted: true,
                    created_at: Timestamp(1_764_037_538_269_290),
                    modified_at: Timestamp(1_764_037_600_000_000),
                },
            })),
        ),
        (
            "DatasetChangedV1",
            env(Event::DatasetChangedV1(DatasetChangedV1 {
                change: sextant_core::dataset::DatasetChange::Examples {
                    dataset_id: sextant_core::DatasetId(Uuid::from_u128(0x6666)),
                    as_of: Timestamp(1_764_037_700_000_000),
                    changes: vec![
                        sextant_core::dataset::ExampleChange::Put(sextant_core::Example {
                            id: sextant_core::ExampleId(Uuid::from_u128(0x7777)),
                            dataset_id: sextant_core::DatasetId(Uuid::from_u128(0x6666)),
                            inputs: RawJson::parse(r#"{"question":"can I get a refund?"}"#).unwrap(),
                            outputs: Some(RawJson::parse(r#"{"answer":"within 30 days"}"#).unwrap()),
                            metadata: RawJson::parse(r#"{"dataset_split":["test"]}"#).unwrap(),
                            source_run_id: Some(RunId(Uuid::from_u128(0x8888))),
                            attachments: vec![sextant_core::dataset::ExampleAttachment {
                                name: "receipt".into(),
                                mime_type: "image/png".into(),
                                size: 3,
                                sha256: "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81".into(),
                            }],
                            created_at: Timestamp(1_764_037_600_000_000),
                            modified_at: Timestamp(1_764_037_700_000_000),
                        }),
                        sextant_core::dataset::ExampleChange::Delete(sextant_core::ExampleId(Uuid::from_u128(0x9999))),
                    ],
                },
            })),
        ),
        (
            "EvaluationAlertV1",
            env(Event::EvaluationAlertV1(crate::EvaluationAlertV1 {
                rule: "persona-judge".into(),
                key: "persona".into(),
                window_mean: 0.42,
                baseline: 0.81,
                window_size: 50,
                run_ids: vec![RunId(Uuid::from_u128(0xaaaa)), RunId(Uuid::from_u128(0xbbbb))],
                at: Timestamp(1_764_037_800_000_000),
            })),
        ),
        (
            "OnlineEvaluatorChangedV1",
            env(Event::OnlineEvaluatorChangedV1(OnlineEvaluatorChangedV1 {
                evaluator: sextant_core::evaluator::OnlineEvaluatorDef {
                    id: Uuid::from_u128(0x5959),
                    name: "helpfulness".into(),
                    kind: sextant_core::evaluator::OnlineEvaluatorKind::Llm,
                    llm: Some(RawJson::parse(r#"{"prompt_repo_handle":"helpfulness-judge","commit_hash_or_tag":"latest"}"#).unwrap()),
                    code: None,
                    metadata: Some(RawJson::parse(r#"{"team":"support"}"#).unwrap()),
                    deleted: false,
                    created_at: Timestamp(1_764_037_538_269_290),
                    updated_at: Timestamp(1_764_037_600_000_000),
                },
            })),
        ),
        (
            "PromptChangedV1",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::Commit(sextant_core::prompt::PromptCommit {
                    repo_id: sextant_core::RepoId(Uuid::from_u128(0xaaaa)),
                    hash: "5d8f3c3a0b8f7e64c2f1d2a7b9e0c4f6a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                    parent: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
                    manifest: RawJson::parse(
                        r#"{"id":["langchain","prompts","chat","ChatPromptTemplate"],"kwargs":{"input_variables":["question"]},"lc":1,"type":"constructor"}"#,
                    )
                    .unwrap(),
                    description: Some("shorter system prompt".into()),
                    created_at: Timestamp(1_764_037_800_000_000),
                }),
            })),
        ),
        // The other changes a prompt event carries: each variant's layout is frozen too.
        (
            "PromptChangedV1.Repo",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::Repo(sextant_core::prompt::PromptRepo {
                    id: sextant_core::RepoId(Uuid::from_u128(0xaaaa)),
                    handle: "support-bot".into(),
                    description: Some("answers refund questions".into()),
                    readme: Some("# Support bot".into()),
                    labels: vec!["english".into()],
                    is_public: false,
                    is_archived: false,
                    variants: vec![
                        sextant_core::prompt::Variant { tag: "canary".into(), weight: 10 },
                        sextant_core::prompt::Variant { tag: "production".into(), weight: 90 },
                    ],
                    // Not in the fixture (written before repository types): it reads as a prompt.
                    repo_type: sextant_core::prompt::RepoType::Prompt,
                    created_at: Timestamp(1_764_037_700_000_000),
                    updated_at: Timestamp(1_764_037_800_000_000),
                }),
            })),
        ),
        (
            "PromptChangedV1.AgentRepo",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::Repo(sextant_core::prompt::PromptRepo {
                    id: sextant_core::RepoId(Uuid::from_u128(0xaaab)),
                    handle: "refund-agent".into(),
                    description: None,
                    readme: None,
                    labels: vec![],
                    is_public: false,
                    is_archived: false,
                    variants: vec![],
                    repo_type: sextant_core::prompt::RepoType::Agent,
                    created_at: Timestamp(1_764_037_700_000_000),
                    updated_at: Timestamp(1_764_037_800_000_000),
                }),
            })),
        ),
        (
            "PromptChangedV1.Tag",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::Tag(sextant_core::prompt::TagMove {
                    repo_id: sextant_core::RepoId(Uuid::from_u128(0xaaaa)),
                    tag: "production".into(),
                    commit: Some("5d8f3c3a0b8f7e64c2f1d2a7b9e0c4f6a1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
                    at: Timestamp(1_764_037_900_000_000),
                }),
            })),
        ),
        (
            "PromptChangedV1.Like",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::Like {
                    repo_id: sextant_core::RepoId(Uuid::from_u128(0xaaaa)),
                    by: TenantId(Uuid::from_u128(0xbbbb)),
                    liked: true,
                    at: Timestamp(1_764_037_950_000_000),
                },
            })),
        ),
        (
            "PromptChangedV1.DeleteRepo",
            env(Event::PromptChangedV1(PromptChangedV1 {
                change: sextant_core::prompt::PromptChange::DeleteRepo {
                    id: sextant_core::RepoId(Uuid::from_u128(0xaaaa)),
                    at: Timestamp(1_764_038_000_000_000),
                },
            })),
        ),
    ]
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(format!("{name}.msgpack"))
}

#[test]
fn every_variant_has_a_fixture_that_still_decodes() {
    let write = std::env::var_os("SEXTANT_WRITE_FIXTURES").is_some();
    for (name, expected) in samples() {
        // `<Kind>.<case>` fixtures freeze the other cases of one event's payload.
        assert_eq!(expected.kind(), name.split('.').next().unwrap());
        let path = fixture_path(name);
        if write && !path.exists() {
            std::fs::write(&path, encode(&expected).unwrap()).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("missing golden fixture {}", path.display()));
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("fixture {name} no longer decodes: {e}"));
        assert_eq!(decoded, expected, "fixture {name} decodes to something else");
    }
}

#[test]
fn encoding_uses_named_fields() {
    let (_, e) = &samples().into_iter().find(|(name, _)| *name == "ProjectCreatedV1").unwrap();
    let bytes = encode(e).unwrap();
    // Named encoding writes field names as strings; positional encoding would not.
    let needle = b"reference_dataset_id";
    assert!(bytes.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn garbage_is_a_decode_error_not_a_panic() {
    for bad in [&b""[..], b"\xc1", b"\x81\xa2id\xc0", &[0xff; 64]] {
        assert!(decode(bad).is_err());
    }
}

//! The gRPC `PromptService` (`proto/sextant/v1/prompts.proto`): a thin transport over
//! [`Prompts`], like `http.rs`. Requests become the JSON bodies or arguments REST passes, so
//! both transports share one validation; failures become statuses through [`ApiError`], the
//! one mapping.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};
use tracing::{field, instrument};

use sextant_auth::Authenticator;
use sextant_core::prompt::{ArchivedFilter, PromptCommit, RepoFilter, Variant};
use sextant_core::Timestamp;
use sextant_proto::grpc::{authenticate, json_text, opt_timestamp, timestamp_to_pb, ClientErrors};
use sextant_proto::pb;
use sextant_proto::pb::prompt_service_server::{PromptService, PromptServiceServer};
use sextant_proto::{truncate, ApiError};

use crate::core::{ListQuery, Prompts, RepoView, SortField, TagTarget};
use crate::http::assignment_metadata;

/// A push carries one manifest (at most 512 KiB canonical).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// A page of commits carries up to a thousand manifests.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

pub struct PromptGrpc {
    prompts: Arc<Prompts>,
    auth: Arc<Authenticator>,
}

/// The gRPC `PromptService` over `prompts`, authenticating with `auth`.
pub fn prompt_service(prompts: Arc<Prompts>, auth: Arc<Authenticator>) -> ClientErrors<PromptServiceServer<PromptGrpc>> {
    sextant_proto::tuned_server!(PromptServiceServer::new(PromptGrpc { prompts, auth }), MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES)
}

/// An empty owner is the caller's own tenant, as `-` is in REST paths.
fn owner(o: &str) -> &str {
    if o.is_empty() {
        "-"
    } else {
        o
    }
}

fn prompt_to_pb(v: RepoView) -> pb::Prompt {
    let r = v.repo;
    pb::Prompt {
        id: r.id.to_string(),
        name: r.handle,
        tenant_id: v.tenant.to_string(),
        description: r.description,
        readme: r.readme,
        tags: r.labels,
        is_public: r.is_public,
        is_archived: r.is_archived,
        variants: r.variants.into_iter().map(|x| pb::Variant { tag: x.tag, weight: x.weight }).collect(),
        created_at: Some(timestamp_to_pb(r.created_at)),
        updated_at: Some(timestamp_to_pb(r.updated_at)),
        num_commits: v.num_commits,
        last_commit_hash: v.last_commit.map(|c| c.hash),
        num_likes: v.likes.len() as u64,
        commit_tags: v.commit_tags,
    }
}

fn commit_to_pb(c: PromptCommit, include_model: bool) -> pb::Commit {
    let manifest_json = match (include_model, sextant_core::prompt::prompt_without_model(&c.manifest.to_value_or_null())) {
        (false, Some(prompt)) => sextant_core::prompt::canonical_json(prompt),
        _ => c.manifest.as_str().to_owned(),
    };
    pb::Commit {
        id: c.id().to_string(),
        commit_hash: c.hash,
        parent_commit_hash: c.parent,
        manifest_json,
        description: c.description,
        created_at: Some(timestamp_to_pb(c.created_at)),
    }
}

fn tag_to_pb(t: crate::core::TagState) -> pb::Tag {
    pb::Tag { tag: t.tag, commit_hash: t.commit, moved_at: Some(timestamp_to_pb(t.moved_at)) }
}

#[tonic::async_trait]
impl PromptService for PromptGrpc {
    #[instrument(name = "grpc.create_prompt", skip_all, fields(tenant = field::Empty))]
    async fn create_prompt(&self, req: Request<pb::CreatePromptRequest>) -> Result<Response<pb::Prompt>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let c = req.into_inner();
        let body =
            json!({"repo_handle": c.name, "description": c.description, "readme": c.readme, "tags": c.tags, "is_public": c.is_public});
        Ok(Response::new(prompt_to_pb(self.prompts.create_repo(p.tenant, &body).await?)))
    }

    #[instrument(name = "grpc.get_prompt", skip_all, fields(tenant = field::Empty))]
    async fn get_prompt(&self, req: Request<pb::GetPromptRequest>) -> Result<Response<pb::Prompt>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let g = req.get_ref();
        Ok(Response::new(prompt_to_pb(self.prompts.get_repo(p.tenant, owner(&g.owner), &g.name).await?)))
    }

    #[instrument(name = "grpc.list_prompts", skip_all, fields(tenant = field::Empty))]
    async fn list_prompts(&self, req: Request<pb::ListPromptsRequest>) -> Result<Response<pb::ListPromptsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let q = req.into_inner();
        let archived = match q.is_archived.as_str() {
            "" | "false" => ArchivedFilter::Exclude,
            "true" => ArchivedFilter::Only,
            "allow" => ArchivedFilter::Any,
            other => return Err(ApiError::unprocessable(format!("is_archived: {:?} is not true, false or allow", truncate(other))).into()),
        };
        let descending = match q.sort_direction.as_str() {
            "" | "desc" => true,
            "asc" => false,
            other => return Err(ApiError::unprocessable(format!("sort_direction: {:?} is not asc or desc", truncate(other))).into()),
        };
        let sort = if q.sort_field.is_empty() { SortField::UpdatedAt } else { SortField::parse(&q.sort_field)? };
        let query = ListQuery {
            filter: RepoFilter { query: Some(q.query).filter(|s| !s.is_empty()), labels: q.tags, is_public: q.is_public, archived },
            sort,
            descending,
            offset: q.offset as usize,
            limit: if q.limit == 0 { 100 } else { q.limit as usize },
        };
        let (views, total) = self.prompts.list_repos(p.tenant, &query).await?;
        Ok(Response::new(pb::ListPromptsResponse { prompts: views.into_iter().map(prompt_to_pb).collect(), total: total as u64 }))
    }

    #[instrument(name = "grpc.push_commit", skip_all, fields(tenant = field::Empty))]
    async fn push_commit(&self, req: Request<pb::PushCommitRequest>) -> Result<Response<pb::Commit>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let c = req.into_inner();
        let mut body = Map::new();
        body.insert("manifest".into(), json_text("manifest_json", &c.manifest_json)?);
        if !c.parent_commit.is_empty() {
            body.insert("parent_commit".into(), Value::String(c.parent_commit));
        }
        if let Some(d) = c.description {
            body.insert("description".into(), Value::String(d));
        }
        let commit = self.prompts.push(p.tenant, owner(&c.owner), &c.name, &Value::Object(body)).await?;
        Ok(Response::new(commit_to_pb(commit, true)))
    }

    #[instrument(name = "grpc.pull_commit", skip_all, fields(tenant = field::Empty))]
    async fn pull_commit(&self, req: Request<pb::PullCommitRequest>) -> Result<Response<pb::Commit>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let reference = if r.r#ref.is_empty() { "latest" } else { r.r#ref.as_str() };
        let (commit, _) = self.prompts.pull(p.tenant, owner(&r.owner), &r.name, reference).await?;
        Ok(Response::new(commit_to_pb(commit, r.include_model)))
    }

    #[instrument(name = "grpc.list_commits", skip_all, fields(tenant = field::Empty))]
    async fn list_commits(&self, req: Request<pb::ListCommitsRequest>) -> Result<Response<pb::ListCommitsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let q = req.into_inner();
        let limit = if q.limit == 0 { 100 } else { q.limit as usize };
        let (commits, total) = self.prompts.list_commits(p.tenant, owner(&q.owner), &q.name, q.offset as usize, limit, None).await?;
        Ok(Response::new(pb::ListCommitsResponse {
            commits: commits.into_iter().map(|c| commit_to_pb(c, q.include_model)).collect(),
            total,
        }))
    }

    #[instrument(name = "grpc.set_tag", skip_all, fields(tenant = field::Empty))]
    async fn set_tag(&self, req: Request<pb::SetTagRequest>) -> Result<Response<pb::Tag>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let t = req.into_inner();
        if t.commit.is_empty() {
            return Err(ApiError::unprocessable("commit is required (latest, a commit hash or a tag)").into());
        }
        let state = self.prompts.set_tag(p.tenant, owner(&t.owner), &t.name, &t.tag, &TagTarget::Ref(t.commit)).await?;
        Ok(Response::new(tag_to_pb(state)))
    }

    #[instrument(name = "grpc.delete_tag", skip_all, fields(tenant = field::Empty))]
    async fn delete_tag(&self, req: Request<pb::DeleteTagRequest>) -> Result<Response<pb::DeleteTagResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let t = req.get_ref();
        self.prompts.delete_tag(p.tenant, owner(&t.owner), &t.name, &t.tag).await?;
        Ok(Response::new(pb::DeleteTagResponse {}))
    }

    #[instrument(name = "grpc.list_tags", skip_all, fields(tenant = field::Empty))]
    async fn list_tags(&self, req: Request<pb::ListTagsRequest>) -> Result<Response<pb::ListTagsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let t = req.get_ref();
        let as_of: Option<Timestamp> = opt_timestamp("as_of", t.as_of.as_ref())?;
        let tags = self.prompts.tags(p.tenant, owner(&t.owner), &t.name, as_of).await?;
        Ok(Response::new(pb::ListTagsResponse { tags: tags.into_iter().map(tag_to_pb).collect() }))
    }

    #[instrument(name = "grpc.tag_history", skip_all, fields(tenant = field::Empty))]
    async fn tag_history(&self, req: Request<pb::TagHistoryRequest>) -> Result<Response<pb::TagHistoryResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let t = req.get_ref();
        let moves = self.prompts.tag_history(p.tenant, owner(&t.owner), &t.name, &t.tag).await?;
        Ok(Response::new(pb::TagHistoryResponse {
            moves: moves.into_iter().map(|m| pb::TagMove { commit_hash: m.commit, moved_at: Some(timestamp_to_pb(m.at)) }).collect(),
        }))
    }

    #[instrument(name = "grpc.set_variants", skip_all, fields(tenant = field::Empty))]
    async fn set_variants(&self, req: Request<pb::SetVariantsRequest>) -> Result<Response<pb::Prompt>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let v = req.into_inner();
        let variants = v.variants.into_iter().map(|x| Variant { tag: x.tag, weight: x.weight }).collect();
        Ok(Response::new(prompt_to_pb(self.prompts.set_variants(p.tenant, owner(&v.owner), &v.name, variants).await?)))
    }

    #[instrument(name = "grpc.assign", skip_all, fields(tenant = field::Empty))]
    async fn assign(&self, req: Request<pb::AssignRequest>) -> Result<Response<pb::Assignment>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let a = req.into_inner();
        let o = owner(&a.owner);
        let assignment = self.prompts.assign(p.tenant, o, &a.name, &a.user_id).await?;
        let metadata = match assignment_metadata(o, &a.name, &assignment) {
            Value::Object(m) => m.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect(),
            _ => unreachable!("the metadata is an object"),
        };
        Ok(Response::new(pb::Assignment {
            variant: assignment.variant.tag,
            commit: Some(commit_to_pb(assignment.commit, a.include_model)),
            metadata,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_shown_with_or_without_its_model() {
        let prompt = json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "ChatPromptTemplate"], "kwargs": {}});
        let seq = json!({"lc": 1, "type": "constructor", "id": ["langchain", "schema", "runnable", "RunnableSequence"],
                         "kwargs": {"first": prompt, "last": {"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "X"]}}});
        let manifest = sextant_core::prompt::canonical_manifest(&seq).unwrap();
        let hash = sextant_core::prompt::commit_hash(manifest.as_str(), None);
        let c = PromptCommit {
            repo_id: sextant_core::RepoId(uuid::Uuid::nil()),
            hash: hash.clone(),
            parent: None,
            manifest,
            description: None,
            created_at: Timestamp(1),
        };
        let without: Value = serde_json::from_str(&commit_to_pb(c.clone(), false).manifest_json).unwrap();
        assert_eq!(without, prompt);
        let with: Value = serde_json::from_str(&commit_to_pb(c, true).manifest_json).unwrap();
        assert_eq!(with, seq);
        assert_eq!(owner(""), "-");
        assert_eq!(owner("x"), "x");
    }
}

//! `--solve-proof`: in a room that asks for proof of work, each join first
//! fetches a challenge and solves it, as the waiting page does, with the
//! runtime's own solver on a blocking thread (off the runtime threads that
//! carry the streams).

use serde::Deserialize;

use crate::http::{Connector, HttpError, Target, encode_component, json_post, one_shot, request};

#[derive(Deserialize)]
struct Challenge {
    challenge: Option<String>,
    difficulty: u8,
}

/// The join request for `room`: with a solved proof when `solve` is set
/// and the room asks for one, else bodiless. `close` asks the broker to
/// close the connection after answering.
pub async fn join_request(
    connector: &Connector,
    target: &Target,
    room: &str,
    solve: bool,
    close: bool,
) -> Result<Vec<u8>, HttpError> {
    let room = encode_component(room);
    let join_path = format!("/v1/rooms/{room}/queue");
    if !solve {
        return Ok(request("POST", &join_path, &target.host, &[], close));
    }
    let ask = request(
        "GET",
        &format!("/v1/rooms/{room}/challenge"),
        &target.host,
        &[],
        true,
    );
    let (response, _) = one_shot(connector, &ask).await?;
    if !response.is_success() {
        return Err(response.into_status_error());
    }
    let answer: Challenge = serde_json::from_slice(&response.body)
        .map_err(|e| HttpError::Protocol(format!("challenge response: {e}")))?;
    let Some(challenge) = answer.challenge.filter(|_| answer.difficulty > 0) else {
        return Ok(request("POST", &join_path, &target.host, &[], close));
    };
    let difficulty = answer.difficulty;
    let (challenge, counter) = tokio::task::spawn_blocking(move || {
        let counter = usher_runtime::pow::solve(&challenge, difficulty);
        (challenge, counter)
    })
    .await
    .map_err(|e| HttpError::Protocol(format!("the solver failed: {e}")))?;
    let body = serde_json::json!({"proof": {"challenge": challenge, "counter": counter}});
    Ok(json_post(
        &join_path,
        &target.host,
        close,
        &body.to_string(),
    ))
}

// Package launch starts servants on other hosts: the launcher protocol, the
// agent that runs on each such host (`mserve launcher`), and the client
// mserve uses to ask agents for servants.
//
// # What it is for
//
// `mserve N COMMAND` starts its servants on its own host. With launchers,
// the same N servants are spread round-robin over agents on other hosts:
//
//	remote$ mserve launcher -listen 0.0.0.0:5010 -secret-file /etc/mserve/launcher.secret -allow './quickstart-servant'
//	local$  mserve -launchers host1:5010,host2:5010 -launcher-secret-file ./launcher.secret 6 ./quickstart-servant
//
// Unlike the kdb+ mserve's agent, which runs any shell command it is sent, an
// agent here only starts command lines that are exactly one of its -allow
// entries, only for a peer that proved it knows the launcher secret, and
// never through a shell.
//
// # Protocol
//
// One TCP connection per mserve and agent, carrying sdk/wire frames (a 4-byte
// big-endian length, then a JSON-RPC 2.0 message):
//
//  1. agent → mserve, notification "launch.challenge":
//     {"protocol":1,"nonce":"<64 hex digits>"}
//  2. mserve → agent, request "launch.auth":
//     {"protocol":1,"mac":hex(HMAC-SHA256(secret, nonce)),"nonce":"<mserve's own nonce>"}
//     where nonce is the challenge's nonce string as sent. The agent
//     compares in constant time; a wrong or late answer, or anything else
//     than launch.auth, is answered with an error (code -32001,
//     unauthorized) and the connection is closed. A good one is answered
//     {"mac":hex(HMAC-SHA256(secret, "agent:"+mserve's nonce)),"host":…}
//     so that mserve, too, knows it talks to an agent holding the secret
//     before it sends the servants' secret. The secret itself never
//     crosses the wire.
//  3. mserve → agent, request "launch.start":
//     {"session":"…","argv":["./servant","-x"],"secret":"…","servants":[{"name":"s1"},{"name":"s3","port":40123}]}
//     argv must equal one of the agent's -allow entries word for word
//     (entries are split into words with strings.Fields). The agent starts
//     each servant under core/supervise, bound to servant-host:port (a
//     free port unless one is asked for), with MSERVE_SERVANT_ADDR, _PORT,
//     _NAME and _SECRET set and {addr}, {port}, {name} replaced in argv,
//     and answers {"servants":[{"name":"s1","addr":"10.0.0.5:40123"},…]}.
//     A start naming the session of another live connection takes it
//     over: that connection is closed and its servants are stopped first
//     (mserve redialling after a network failure the agent has not
//     noticed yet).
//  4. mserve → agent, request "rpc.ping" every PingInterval, answered
//     "pong"; request "launch.stop" stops the connection's servants.
//
// # Lifetime
//
// The servants of a connection live exactly as long as it: when it closes
// (mserve stopped or died) or stays silent for the agent's IdleTimeout
// (mserve's host died or the network broke), the agent stops them, SIGTERM
// then SIGKILL after its grace period. When the agent itself is stopped it
// stops all its servants first; when it is killed, the kernel kills them
// (supervise's Pdeathsig, Linux). The client redials a lost agent with
// backoff and asks again for the same servants on the same ports, so mserve's
// links to them reconnect by themselves.
//
// Nothing is encrypted: run launchers on a private network or through a
// tunnel. The servants' secret crosses the (authenticated) connection in
// clear.
package launch

//! The host side: the network namespaces, the sweeper that runs the `iter/tcp` program in each
//! of them, the owners of sockets (processes from /proc, pods from the cgroup and the API
//! server), the process's own capabilities and its allocator settings.
pub mod caps;
pub mod generations;
pub mod k8s;
pub mod malloc;
pub mod netns;
pub mod owners;
pub mod sweeper;

//! The Linux socket options socket2 and rustix do not wrap, so that the workspace's
//! only `setsockopt` through libc lives here. Elsewhere than Linux they do nothing.

use std::io;
use std::os::fd::AsFd;

/// `TCP_DEFER_ACCEPT` on a listening socket: the kernel hands a connection over
/// only once the peer has sent data, or after about `secs` seconds.
pub fn defer_accept(listener: &impl AsFd, secs: u32) -> io::Result<()> {
    set_int(listener, Level::Tcp, Opt::DeferAccept, secs)
}

/// `IP_BIND_ADDRESS_NO_PORT` on a client socket about to be bound to a source
/// address: the port is then chosen at `connect`, unique per 4-tuple, instead of
/// at `bind`, unique per address (a search that grows with the sockets open).
pub fn bind_address_no_port(socket: &impl AsFd) -> io::Result<()> {
    set_int(socket, Level::Ip, Opt::BindAddressNoPort, 1)
}

enum Level {
    Ip,
    Tcp,
}

enum Opt {
    DeferAccept,
    BindAddressNoPort,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the reason this crate exists
fn set_int(socket: &impl AsFd, level: Level, opt: Opt, value: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let level = match level {
        Level::Ip => libc::IPPROTO_IP,
        Level::Tcp => libc::IPPROTO_TCP,
    };
    let name = match opt {
        Opt::DeferAccept => libc::TCP_DEFER_ACCEPT,
        Opt::BindAddressNoPort => libc::IP_BIND_ADDRESS_NO_PORT,
    };
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: a live socket fd (borrowed for the call) and an int option value of
    // the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of_val(&value) as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_int(_socket: &impl AsFd, _level: Level, _opt: Opt, _value: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    use super::*;

    #[allow(unsafe_code)]
    fn read_int(socket: &impl AsFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of_val(&value) as libc::socklen_t;
        // SAFETY: a live socket fd and an int-sized buffer with its length.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn defer_accept_is_set_on_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let read = || read_int(&listener, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT);
        assert_eq!(read(), 0);
        defer_accept(&listener, 5).unwrap();
        // The kernel stores it as SYN-ACK retransmissions and reports seconds back.
        assert!(read() >= 5, "{}", read());
    }

    #[test]
    fn bind_address_no_port_is_set() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let read = || read_int(&listener, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
        assert_eq!(read(), 0);
        bind_address_no_port(&listener).unwrap();
        assert_eq!(read(), 1);
    }

    #[test]
    fn a_file_that_is_no_socket_is_an_error() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(defer_accept(&file, 5).is_err());
    }
}

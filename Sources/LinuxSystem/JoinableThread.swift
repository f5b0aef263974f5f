import Glibc

/// A POSIX thread that runs `body` once and can be joined: the one way the project starts its own threads
/// (event loops, device workers, the failover watch, aoectl attach's ring server). `body` and what it captures
/// stay alive until it returns. The caller answers for what `body` shares with other threads.
public final class JoinableThread {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    private var thread = pthread_t()
    private var joined = false

    public init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Body(body))
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// Waits for `body` to return; once only (later calls return at once).
    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}

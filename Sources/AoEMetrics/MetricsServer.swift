import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` over HTTP/1.1 (SwiftNIO) on its own thread, off the frame path. Anything else gets
/// 404 (another path) or 405 (another method).
public final class MetricsServer: Sendable {
    public struct ListenError: Error, CustomStringConvertible {
        public var description: String
    }

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    /// Where it listens, as bound (the port is the real one when 0 was asked for).
    public let address: String

    /// Binds `host:port` and starts serving; throws a clear error when the address is in use, not local, or
    /// not allowed.
    public init(host: String, port: Int, exporter: MetricsExporter) throws(ListenError) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 16)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(exporter: exporter))
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            let why: String
            if let io = error as? IOError {
                switch io.errnoCode {
                case 98: why = "address already in use (another process listens there)"   // EADDRINUSE
                case 99: why = "not an address of this host"                                 // EADDRNOTAVAIL
                case 13: why = "permission denied (ports below 1024 need privileges)"         // EACCES
                default: why = "\(io)"
                }
            } else {
                why = "\(error)"
            }
            throw ListenError(description: "metrics: cannot listen on \(host):\(port): \(why)")
        }
        self.group = group
        // The host as asked for (the socket reports IPv4 as IPv4-mapped IPv6), the port as bound.
        let boundPort = channel.localAddress?.port ?? port
        address = host.contains(":") ? "[\(host)]:\(boundPort)" : "\(host):\(boundPort)"
    }

    public func close() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// One HTTP connection: answers each request when its end arrives.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exporter: MetricsExporter
    private var head: HTTPRequestHead?

    init(exporter: MetricsExporter) { self.exporter = exporter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
            let (status, body, type): (HTTPResponseStatus, String, String) =
                request.method != .GET && request.method != .HEAD ? (.methodNotAllowed, "only GET\n", "text/plain")
                : path == "/metrics" ? (.ok, exporter.render(), "text/plain; version=0.0.4; charset=utf-8")
                : (.notFound, "not found: the metrics are at /metrics\n", "text/plain")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
            if request.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let keepAlive = request.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}

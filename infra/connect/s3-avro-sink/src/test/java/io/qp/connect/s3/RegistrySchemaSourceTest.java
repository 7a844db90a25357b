package io.qp.connect.s3;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The registry client against a real loopback HTTP server: what is a bad record, what is transient. */
class RegistrySchemaSourceTest {
  static final String GOOD = "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"run_id\",\"type\":\"string\"}]}";
  HttpServer server;
  String url;

  static String quote(String s) {
    return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }

  @BeforeEach
  void start() throws IOException {
    server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
    server.createContext("/schemas/ids/", exchange -> {
      int id = Integer.parseInt(exchange.getRequestURI().getPath().replaceAll(".*/", ""));
      int status;
      String body;
      switch (id) {
        case 1 -> { status = 200; body = "{\"schema\":" + quote(GOOD) + "}"; }
        case 2 -> { status = 200; body = "{\"schema\":" + quote("{\"type\":\"record\",\"name\":\"broken\"") + "}"; }
        case 3 -> { status = 404; body = "{\"error_code\":40403,\"message\":\"Schema 3 not found.\"}"; }
        case 4 -> { status = 404; body = "<html>no such path</html>"; }
        case 5 -> { status = 401; body = "{\"error_code\":40101,\"message\":\"unauthorized\"}"; }
        case 6 -> { status = 403; body = "{\"error_code\":40301,\"message\":\"forbidden\"}"; }
        case 7 -> { status = 429; body = "{\"error_code\":42901,\"message\":\"slow down\"}"; }
        case 8 -> { status = 503; body = "{\"error_code\":50301,\"message\":\"unavailable\"}"; }
        default -> { status = 200; body = "not json"; }
      }
      byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
      exchange.sendResponseHeaders(status, bytes.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(bytes);
      }
    });
    server.createContext("/auth/schemas/ids/", exchange -> {
      String expected = "Basic " + java.util.Base64.getEncoder().encodeToString(
          "reg-user:p@ss:w0rd".getBytes(StandardCharsets.UTF_8));
      boolean ok = expected.equals(exchange.getRequestHeaders().getFirst("Authorization"));
      byte[] bytes = (ok ? "{\"schema\":" + quote(GOOD) + "}" : "{\"error_code\":0,\"message\":\"User is not authenticated.\"}")
          .getBytes(StandardCharsets.UTF_8);
      exchange.sendResponseHeaders(ok ? 200 : 401, bytes.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(bytes);
      }
    });
    server.start();
    url = "http://127.0.0.1:" + server.getAddress().getPort();
  }

  @AfterEach
  void stop() {
    server.stop(0);
  }

  @Test
  void onlyUnknownIdsAndUnparseableSchemasAreBadRecords() throws Exception {
    RegistrySchemaSource source = new RegistrySchemaSource(url);
    assertEquals("R", source.byId(1).getName());
    BadRecordException broken = assertThrows(BadRecordException.class, () -> source.byId(2));
    assertTrue(broken.getMessage().contains("is not a valid Avro schema"), broken.getMessage());
    BadRecordException unknown = assertThrows(BadRecordException.class, () -> source.byId(3));
    assertTrue(unknown.getMessage().contains("schema id 3 is unknown"));
    for (int transientId : new int[] {4, 5, 6, 7, 8, 9}) {
      IOException e = assertThrows(IOException.class, () -> source.byId(transientId), "id " + transientId);
      assertTrue(e.getMessage().contains("schema registry at " + url), e.getMessage());
    }
  }

  @Test
  void basicAuthFromConfigOrUrlAndNoCredentialInAnyMessage() throws Exception {
    int port = server.getAddress().getPort();
    assertEquals("R", new RegistrySchemaSource(url + "/auth", "reg-user:p@ss:w0rd").byId(1).getName());
    // user info in the URL (percent-encoded '@' and ':'), stripped from the URL the messages name
    RegistrySchemaSource fromUrl = new RegistrySchemaSource("http://reg-user:p%40ss%3Aw0rd@127.0.0.1:" + port + "/auth");
    assertEquals("R", fromUrl.byId(1).getName());
    IOException wrong = assertThrows(IOException.class,
        () -> new RegistrySchemaSource("http://reg-user:wrong-pw@127.0.0.1:" + port + "/auth").byId(1));
    assertEquals("schema registry at http://127.0.0.1:" + port + "/auth refused the sink's credentials (HTTP 401) "
        + "for schema id 1 (transient, retried)", wrong.getMessage());
    IOException none = assertThrows(IOException.class, () -> new RegistrySchemaSource(url + "/auth").byId(1));
    assertTrue(none.getMessage().contains("none configured: set schema.registry.basic.auth.user.info"),
        none.getMessage());
    IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
        () -> new RegistrySchemaSource(url, "no-colon-secret"));
    assertTrue(!bad.getMessage().contains("no-colon-secret"), bad.getMessage());
  }

  @Test
  void aRegistryThatNeverAnswersIsATransientErrorWithinTheTimeout() throws Exception {
    List<Socket> held = new ArrayList<>();
    try (ServerSocket stalled = new ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress())) {
      Thread acceptor = new Thread(() -> {
        while (!stalled.isClosed()) {
          try {
            held.add(stalled.accept()); // accept and never answer
          } catch (IOException e) {
            return;
          }
        }
      });
      acceptor.setDaemon(true);
      acceptor.start();
      RegistrySchemaSource source = new RegistrySchemaSource("http://127.0.0.1:" + stalled.getLocalPort(),
          Duration.ofSeconds(1), Duration.ofSeconds(1));
      long start = System.nanoTime();
      IOException e = assertThrows(IOException.class, () -> source.byId(1));
      double seconds = (System.nanoTime() - start) / 1e9;
      assertTrue(seconds < 5, "took " + seconds + " s");
      assertTrue(e.getMessage().contains("did not answer"), e.getMessage());
    } finally {
      for (Socket s : held) {
        s.close();
      }
    }
  }
}

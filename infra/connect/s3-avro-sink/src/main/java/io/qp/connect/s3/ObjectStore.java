package io.qp.connect.s3;

import java.io.IOException;
import java.util.List;

/** Where landed files go. */
public interface ObjectStore {
  void put(String key, byte[] data) throws IOException;

  /** Keys below a prefix (recursively). */
  List<String> list(String prefix) throws IOException;
}

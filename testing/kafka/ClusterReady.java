// Waits until every listed broker serves metadata that names the expected number of brokers.
//
// Run by scripts/kafka-cluster with Java's single-file source launcher, on the broker's own
// classpath:  java -cp 'libs/*' ClusterReady.java HOST:PORT[,HOST:PORT...] BROKERS TIMEOUT_SECONDS
// Exit 0 when ready, 1 on timeout (with what each broker last answered), 2 on bad arguments.

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.common.Node;

public class ClusterReady {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: ClusterReady HOST:PORT[,HOST:PORT...] BROKERS TIMEOUT_SECONDS");
            System.exit(2);
        }
        String[] addresses = args[0].split(",");
        int expected = Integer.parseInt(args[1]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));
        List<String> lastAnswers = new ArrayList<>();
        while (true) {
            lastAnswers.clear();
            boolean ready = true;
            for (String address : addresses) {
                String answer = ask(address);
                lastAnswers.add(address + ": " + answer);
                ready &= answer.equals(expected + " brokers");
            }
            if (ready) {
                return;
            }
            if (System.nanoTime() > deadline) {
                System.err.println("not ready: " + String.join("; ", lastAnswers));
                System.exit(1);
            }
            Thread.sleep(250);
        }
    }

    // Asks one broker alone (it is the only bootstrap address) how many brokers it knows.
    private static String ask(String address) {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, address);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "200");
        try (Admin admin = Admin.create(props)) {
            Collection<Node> nodes = admin
                .describeCluster(new DescribeClusterOptions().timeoutMs(2000))
                .nodes()
                .get(3, TimeUnit.SECONDS);
            return nodes.size() + " brokers";
        } catch (Exception e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            return cause.getClass().getSimpleName();
        }
    }
}

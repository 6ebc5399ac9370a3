//! deploy/kubernetes/facto.yaml: the manifests cannot run here (no Kubernetes), so their shape
//! is checked: a headless Service whose names resolve before readiness, a StatefulSet of six
//! with parallel pod management, a volume claim each, a readiness probe on /status and ids
//! from the pod ordinal, a peer list that names exactly its pods, and a client Service.

use serde_yaml::Value;

fn manifests() -> Vec<Value> {
    manifests_of("facto.yaml")
}

fn manifests_of(file: &str) -> Vec<Value> {
    let path = format!("{}/deploy/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).expect("valid YAML")).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_kubernetes_manifests_have_the_shape_facto_needs() {
    let docs = manifests();
    assert_eq!(docs.len(), 3);
    let headless = of_kind(&docs, "Service", "facto");
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));

    let set = of_kind(&docs, "StatefulSet", "facto");
    let spec = &set["spec"];
    assert_eq!(spec["serviceName"].as_str(), Some("facto"));
    assert_eq!(spec["replicas"].as_u64(), Some(6));
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    assert_eq!(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]);
    assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"].as_str(), Some("data"));

    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "node");
    assert!(args.contains(&"--id-from-hostname"));
    let data_dir = args[args.iter().position(|a| *a == "--data-dir").unwrap() + 1];
    assert!(container["volumeMounts"].as_sequence().unwrap().iter().any(|m| m["mountPath"].as_str() == Some(data_dir)));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/status"));

    let env = container["env"].as_sequence().unwrap();
    let peers = env.iter().find(|e| e["name"].as_str() == Some("FACTO_PEERS")).unwrap()["value"].as_str().unwrap();
    let members = facto::config::Members::parse(peers).expect("a valid --peers");
    assert_eq!(members.ids(), (0..6).collect::<Vec<u32>>(), "one member per pod ordinal");
    for id in members.ids() {
        assert_eq!(members.addr(id), Some(format!("facto-{id}.facto:7000").as_str()), "pod facto-{id} is member {id}");
        assert_eq!(facto::cli::id_of_hostname(&format!("facto-{id}")).unwrap(), id);
    }

    let client = of_kind(&docs, "Service", "facto-client");
    assert_eq!(client["spec"]["selector"], spec["selector"]["matchLabels"]);
    assert_eq!(client["spec"]["ports"][0]["targetPort"].as_u64(), Some(7000));
}

/// facto-tls.yaml is facto.yaml with TLS: the same objects, and the members' certificates
/// mounted from a Secret where --tls-dir points, probes over HTTPS.
#[test]
fn the_tls_manifests_are_the_plain_ones_with_certificates_mounted() {
    let (plain, tls) = (manifests(), manifests_of("facto-tls.yaml"));
    assert_eq!(plain.len(), tls.len());
    let set = &of_kind(&tls, "StatefulSet", "facto")["spec"]["template"]["spec"];
    let container = &set["containers"][0];
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    let tls_dir = args[args.iter().position(|a| *a == "--tls-dir").expect("--tls-dir") + 1];
    let mount =
        container["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["mountPath"].as_str() == Some(tls_dir));
    let volume = mount.expect("the TLS directory is mounted")["name"].as_str().unwrap();
    let source = set["volumes"].as_sequence().unwrap().iter().find(|v| v["name"].as_str() == Some(volume)).unwrap();
    assert_eq!(source["secret"]["secretName"].as_str(), Some("facto-tls"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"].as_str(), Some("HTTPS"), "{probe}");
    }
    let plain_env = &of_kind(&plain, "StatefulSet", "facto")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(&container["env"], plain_env, "the same members and settings");
}

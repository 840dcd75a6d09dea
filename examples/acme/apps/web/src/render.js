export function render(node, props) {
  node.textContent = props.title;
}

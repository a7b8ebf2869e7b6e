"""Pure traffic routing on Istio VirtualService and DestinationRule documents."""
